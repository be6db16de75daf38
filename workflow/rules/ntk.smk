# Stage 2, NTK: the infinite-width Gram matrix H∞ of eq. (10) in closed form, its full spectrum (λ0, λmax,
# λm = λmax + λ0/4, κ), the learning rates η = 1/(c·λm), the Lemma 2 finite-width gap per width, and a plot.


rule ntk:
    """Spectrum, eigenvectors and summary of H∞ for one dataset (float64, LAPACK symmetric solver; CUDA if seen)."""
    input:
        data=PATHS["data"],
    output:
        spectrum=PATHS["spectrum"],
        summary=PATHS["ntk_summary"],
        eigvecs=PATHS["eigvecs"],
        finite_width=PATHS["finite_width"],
        plot=report(
            PATHS["spectrum_plot"],
            category="NTK spectrum",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "figure": "spectrum of H∞"},
            caption="../report/spectrum.rst",
        ),
    log:
        PATHS["log_ntk"],
    benchmark:
        PATHS["bench_ntk"]
    # Short jobs at the head of long chains go first: the train and theory jobs of every dataset then overlap.
    priority: 20
    conda:
        "../../envs/torch.yaml"
    threads: eigh_threads
    resources:
        mem_mb=ntk_mem_mb,
        gpu=train_gpus(),
        runtime=ntk_runtime,
    params:
        divisors=" ".join(str(c) for c in config["grid"]["eta_divisors"]),
        widths=" ".join(str(m) for m in config["grid"]["widths"]),
        gap_max_n=config["ntk"]["gap_max_n"],
        gap_seed=config["ntk"]["gap_seed"],
        eigvec_dtype=config["ntk"]["eigvec_dtype"],
        gram_max_n=config["train"]["gram_max_n"],
        gram_seed=config["train"]["gram_seed"],
        device=config["train"]["device"],
    shell:
        """
        python -m momentum_ntk.ntk --data {input.data} --dataset {wildcards.dataset} \
            --eta-divisors {params.divisors} --widths {params.widths} \
            --gap-max-n {params.gap_max_n} --gap-seed {params.gap_seed} --eigvec-dtype {params.eigvec_dtype} \
            --gram-max-n {params.gram_max_n} --gram-seed {params.gram_seed} \
            --device {params.device} --gpus-held {resources.gpu} --threads {threads} \
            --spectrum {output.spectrum} --summary {output.summary} --eigvecs {output.eigvecs} \
            --gap {output.finite_width} --plot {output.plot} >{log} 2>&1
        """


rule all_ntk:
    """NTK spectrum and summary of every configured dataset."""
    input:
        expand(PATHS["ntk_summary"], dataset=DATASETS),
        expand(PATHS["spectrum_plot"], dataset=DATASETS),
