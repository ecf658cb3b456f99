# The versioned LDS kit of a finished LDS run (diffattr.kit): `snakemake --configfile … kit`.

rule build_kit:
    input:
        unpack(kit_inputs),
    output:
        directory(P.kit),
    params:
        cfg=cfg_slice("kit"),
        rebuild=kit_command(),
        memorization=lambda wildcards, input: (
            f"--memorization {input.memorization}" if "memorization" in input.keys() else ""
        ),
        regime=lambda wildcards, input: (
            f"--regime {input.regime}" if "regime" in input.keys() else ""
        ),
    log:
        P.log("build_kit"),
    benchmark:
        P.benchmark("build_kit")
    threads: 1
    conda:
        ENV
    resources:
        mem_mb=8000,
        runtime=60,
    shell:
        "diffattr build-kit --cfg {params.cfg:q} --data {input.data} --targets {input.targets}"
        " --models {input.models} --subsets {input.subsets}"
        " --ground-truth {input.ground_truth} --scores {input.scores}"
        " --train-features {input.train_features} --target-features {input.target_features}"
        " --member-scores {input.member_scores} {params.memorization} {params.regime}"
        " --table {input.table} --details {input.details} --rebuild {params.rebuild:q}"
        " --out {output} > {log} 2>&1"
