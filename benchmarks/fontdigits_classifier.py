"""The counterfactual's feature classifier on procedural font digits: trained as the workflow's
``train_classifier`` rule trains it (the config's ``counterfactual.classifier``, its seeded
held-out split of the training set), and measured also on an independent fontdigits set drawn
under another master seed (other jitter, blur and font draws; the same fonts).

    python benchmarks/fontdigits_classifier.py --configfile config/fontdigits-lds.yaml \\
        [--other-seed 1]

Prints the held-out accuracy of the workflow's split, the accuracy on the other seed's set,
per-class accuracy there, and the seconds spent (one thread).
"""

from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    from diffattr.classifier import train_classifier
    from diffattr.config import load
    from diffattr.data import prepare

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configfile", nargs="+", required=True)
    ap.add_argument("--other-seed", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = load(["config/config.yaml", *args.configfile])
    dataset = cfg.dataset.to_dict()
    data = prepare({**dataset, "seed": cfg.seed})
    other = prepare({**dataset, "seed": args.other_seed})
    n_classes = max(len(data.class_names), int(data.labels.max()) + 1)
    start = time.perf_counter()
    model, info = train_classifier(
        data.images, data.labels, n_classes, cfg.counterfactual.classifier, cfg.seed
    )
    seconds = time.perf_counter() - start
    with torch.no_grad():
        predicted = model(torch.from_numpy(other.images)).argmax(1).numpy()
    correct = predicted == other.labels
    print(f"dataset {cfg.dataset.name}: n = {data.n}, image {data.shape}")
    print(
        f"held-out accuracy (workflow split, {info['n_held_out']} images): "
        f"{info['held_out_accuracy']:.4f}; train accuracy {info['train_accuracy']:.4f}"
    )
    print(f"accuracy on seed {args.other_seed}'s set ({other.n} images): {correct.mean():.4f}")
    per_class = [correct[other.labels == c].mean() for c in range(n_classes)]
    print("per class:", " ".join(f"{c}:{a:.3f}" for c, a in enumerate(per_class)))
    print(f"training: {seconds:.1f} s ({info['steps']} steps, one thread)")


if __name__ == "__main__":
    main()
