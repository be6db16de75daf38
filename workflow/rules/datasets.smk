# The datasets of this config: every dataset the package knows (ALL_DATASETS, the {dataset} wildcard's values) and
# those this run builds (DATASETS: the configured ones, plus each optional one that is available offline).


ALL_DATASETS = list(plan.FULL_SHAPES)


def source_of(dataset):
    return config["data"]["sources"].get(dataset, "auto")


def local_path_of(dataset):
    return config["data"]["paths"].get(dataset)


DATASETS = list(config["datasets"]) + [
    d
    for d in config["optional_datasets"]
    if d not in config["datasets"]
    and plan.available_offline(
        d, source_of(d), local_path_of(d), config["data"]["cache_dir"]
    )
]
