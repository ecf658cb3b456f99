"""Linear datamodeling score (LDS) per step, with intervals, a structured null and a noise ceiling.

- Subsets S_j ⊂ train of exactly ⌊α·n⌋ examples (fixed size: Bernoulli masks let subset size pass
  for attribution), seeded; the first ``tuning`` subsets tune knobs (λ), the rest are reported
  (``subsets``).
- Ground truth: f_t on every subset model with the same x̂_0^t and the same noise draws for every
  model (common random numbers), averaged over the training seeds of the subset
  (``ground_truth``); the memorization reference measures the same on each subset's empirical
  optimal denoiser (``memorization``).
- Prediction for subset j: −Σ_{i∈S_j} τ_i (positive scores lower the output).
- LDS_t = mean over targets of Spearman(prediction, ground truth) across subsets (``stats``).
- Interval: bootstrap resampling subsets and targets jointly. Null: LDS of random score vectors
  each shared by all targets (targets share a per-model component, so a per-target null is too
  optimistic). Ceiling: split-half reliability of the ground truth over training seeds,
  Spearman–Brown corrected; a perfect attribution correlates at most √reliability with it.
- The report (``report``) tunes λ on the tuning subsets only and assembles the table.
"""
