# Patch-level attribution (attribution.patches): boxes, patch target features, patch scores and
# figures; with the LDS, every patch's ground truth and the patch LDS report.


rule make_patches:
    input:
        data=P.data,
        targets=P.targets,
        box_file=[PATCHES.file] if PATCHES.file else [],  # an edited CSV remakes the boxes
    output:
        P.patches,
    params:
        cfg=cfg_slice("patches"),
    log:
        P.log("make_patches"),
    benchmark:
        P.benchmark("make_patches")
    conda:
        ENV
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "diffattr make-patches --cfg {params.cfg:q} --data {input.data}"
        " --targets {input.targets} --out {output} > {log} 2>&1"


rule featurize_patch_targets:
    input:
        targets=P.targets,
        patches=P.patches,
        model=model_dir_of,
    output:
        P.patch_target_features("{method}", "{member}"),
    params:
        cfg=cfg_slice("featurize_targets"),
    log:
        P.log("featurize_patch_targets", "{method}-{member}"),
    benchmark:
        P.benchmark("featurize_patch_targets", "{method}-{member}")
    threads: 1
    conda:
        ENV
    resources:
        mem_mb=4000,
        runtime=120,
    shell:
        "diffattr featurize-patch-targets --cfg {params.cfg:q} --model {input.model}"
        " --member {wildcards.member} --method {wildcards.method} --targets {input.targets}"
        " --patches {input.patches} --out {output} --threads {threads} > {log} 2>&1"


rule score_patches:
    input:
        unpack(patch_score_inputs),
    output:
        P.patch_scores("{method}"),
    params:
        cfg=lambda wildcards: RUN_CONFIG.slice("score", unused_score_keys(wildcards.method)),
        lds=lambda wildcards, input: f"--lds {input.lds}" if "lds" in input.keys() else "",
    log:
        P.log("score_patches", "{method}"),
    benchmark:
        P.benchmark("score_patches", "{method}")
    threads: 1
    conda:
        ENV
    resources:
        mem_mb=8000,
        runtime=60,
    shell:
        "diffattr score-patches --cfg {params.cfg:q} --method {wildcards.method}"
        " --data {input.data} --targets {input.targets} --patches {input.patches}"
        " --kernels {input.kernels} --target-features {input.target_features}"
        " --train-features {input.train_features} {params.lds}"
        " --out {output} --threads {threads} > {log} 2>&1"


rule figure_patches:
    input:
        scores=P.patch_scores("{method}"),
        targets=P.targets,
        data=P.data,
    output:
        report(
            directory(P.patch_figures("{method}")),
            patterns=["{name}.png"],
            caption="../report/patches.rst",
            category="Patches",
            subcategory="{method}",
            labels={"method": "{method}", "target": "{name}"},
        ),
    params:
        cfg=cfg_slice("figure_attributions"),
    log:
        P.log("figure_patches", "{method}"),
    benchmark:
        P.benchmark("figure_patches", "{method}")
    conda:
        ENV
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "diffattr figure-patches --cfg {params.cfg:q} --scores {input.scores}"
        " --targets {input.targets} --data {input.data} --out {output} > {log} 2>&1"


rule ground_truth_patches:
    input:
        models=subset_models_of,
        targets=P.targets,
        patches=P.patches,
    output:
        P.patch_ground_truth("{subset}"),
    params:
        cfg=cfg_slice("ground_truth_patches"),
    log:
        P.log("ground_truth_patches", "s{subset}"),
    benchmark:
        P.benchmark("ground_truth_patches", "s{subset}")
    threads: 1
    conda:
        ENV
    resources:
        mem_mb=4000,
        runtime=60,
    shell:
        "diffattr ground-truth-patches --cfg {params.cfg:q} --models {input.models}"
        " --targets {input.targets} --patches {input.patches} --out {output}"
        " --threads {threads} > {log} 2>&1"


rule lds_patches_report:
    input:
        subsets=P.subsets,
        ground_truth=[P.patch_ground_truth(j) for j in LDS_SUBSETS],
        patch_scores=[P.patch_scores(m) for m in PATCH_METHODS],
        scores=[downstream_scores(m) for m in PATCH_METHODS],
    output:
        csv=report(
            P.report("lds_patches.csv"),
            caption="../report/patches.rst",
            category="Evaluation",
            subcategory="Patch LDS",
            labels={"result": "patch LDS", "format": "CSV"},
        ),
        localization=P.report("lds_patches_localization.csv"),
    params:
        cfg=cfg_slice("lds_report"),
    log:
        P.log("lds_patches_report"),
    benchmark:
        P.benchmark("lds_patches_report")
    threads: 1
    conda:
        ENV
    resources:
        mem_mb=8000,
        runtime=60,
    shell:
        "diffattr lds-patches-report --cfg {params.cfg:q} --subsets {input.subsets}"
        " --ground-truth {input.ground_truth} --patch-scores {input.patch_scores}"
        " --scores {input.scores} --out-csv {output.csv}"
        " --out-localization {output.localization} > {log} 2>&1"


rule lds_patches_figure:
    input:
        table=P.report("lds_patches.csv"),
        localization=P.report("lds_patches_localization.csv"),
    output:
        report(
            DRAWN.figure("lds_patches.png"),
            caption="../report/patches.rst",
            category="Evaluation",
            subcategory="Patch LDS",
            labels={"result": "patch LDS and localization", "format": "figure"},
        ),
    params:
        cfg=cfg_slice("report_figures"),
    log:
        DRAWN.log("lds_patches_figure"),
    benchmark:
        DRAWN.benchmark("lds_patches_figure")
    threads: 1
    conda:
        ENV
    resources:
        mem_mb=2000,
        runtime=15,
    shell:
        "diffattr lds-patches-figure --cfg {params.cfg:q} --table {input.table}"
        " --localization {input.localization} --out-figure {output} > {log} 2>&1"
