# Extra target sets (extra_targets): more targets scored against the run's stored training
# features and kernels; only the targets' own trajectories and features are computed.


rule sample_extra_targets:
    input:
        model=P.model(0),
        data=P.data,
    output:
        P.extra("{target_set}").targets,
    params:
        cfg=cfg_slice("sample"),
        source=extra_source,
    log:
        P.log("sample_extra_targets", "{target_set}"),
    benchmark:
        P.benchmark("sample_extra_targets", "{target_set}")
    threads: 1
    conda:
        ENV
    resources:
        mem_mb=4000,
        runtime=60,
    shell:
        "diffattr sample-extra-targets --cfg {params.cfg:q} --model {input.model}"
        " --data {input.data} --target-set {wildcards.target_set} {params.source}"
        " --out {output} --threads {threads} > {log} 2>&1"


use rule featurize_targets as featurize_extra_targets with:
    input:
        targets=P.extra("{target_set}").targets,
        model=model_dir_of,
    output:
        P.extra("{target_set}").target_features("{method}", "{member}"),
    log:
        P.log("featurize_extra_targets", "{target_set}-{method}-{member}"),
    benchmark:
        P.benchmark("featurize_extra_targets", "{target_set}-{method}-{member}")


use rule score as score_extra with:
    input:
        unpack(extra_score_inputs),
    output:
        P.extra("{target_set}").scores("{method}"),
    log:
        P.log("score_extra", "{target_set}-{method}"),
    benchmark:
        P.benchmark("score_extra", "{target_set}-{method}")


rule figure_extra:
    input:
        scores=P.extra("{target_set}").scores("{method}"),
        targets=P.extra("{target_set}").targets,
        data=P.data,
    output:
        directory(P.extra("{target_set}").attribution_figures("{method}")),
    params:
        cfg=cfg_slice("figure_attributions"),
    log:
        P.log("figure_extra", "{target_set}-{method}"),
    benchmark:
        P.benchmark("figure_extra", "{target_set}-{method}")
    conda:
        ENV
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "diffattr figure-attributions --cfg {params.cfg:q} --scores {input.scores}"
        " --targets {input.targets} --data {input.data} --out {output} > {log} 2>&1"
