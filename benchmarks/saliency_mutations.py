"""Mutation check of the saliency core: each deliberate bug must make a test fail.

    python benchmarks/saliency_mutations.py            # every mutation
    python benchmarks/saliency_mutations.py pointing   # only those whose title contains "pointing"

Mutates a worktree copy of HEAD (``_mutations.run_mutations``), over which the working
tree's current sipgrad/{hooks,attribution,evaluation,render} and
tests/{hooks,attribution,evaluation,render} (and tests/conftest.py) are laid. Exit status 1
if any mutation survived or no longer matches the code.

Result (2026-11-30, CPU, the command above): 56 mutations, 56 killed; the 2 added later (a map of
another class named like the top-1's, a SIP value error without its spec) are killed too; all 58
again on 2026-12-01 at b069bf8. The 5 of pca:K's CUDA route (added with it, run on the CPU through
a stand-in SVD) are killed. The first audit ran
the first 52 against the tests of the time: 39 killed, 13 survived (absq's |.|, IG's noise
baseline scale, the clean prediction under the noisy methods, pointing game row/column and
height/width, centre baseline, boxes marked invalid (pointing and mask), mu_in's |.|, the
blur's second axis, the default clip percentile, the sparse-map fallback, negative values'
clipping). tests/{hooks,attribution,evaluation,render}/test_*_values.py kill them; the two
thread-count mutations were added with those files' thread-count tests.
"""

from __future__ import annotations

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from _mutations import run_mutations  # noqa: E402

H, A, E, R = "sipgrad/hooks/", "sipgrad/attribution/", "sipgrad/evaluation/metrics.py", "sipgrad/render/overlay.py"
T_HOOKS = "tests/hooks tests/attribution"
T_ATTR = "tests/attribution tests/hooks/test_sip.py"
T_EVAL = "tests/evaluation/test_metrics.py tests/evaluation/test_metric_values.py"
T_RENDER = "tests/render"
COPIED = ("sipgrad/hooks", "sipgrad/attribution", "sipgrad/evaluation", "sipgrad/render",
          "tests/hooks", "tests/attribution", "tests/evaluation", "tests/render", "tests/conftest.py")

MUTATIONS = [
    # -- SIP filter and hooks -----------------------------------------------------------------
    ("filter: variance conservation factor dropped (gamma = inf)", H + "filter.py",
     "        kept_scale = torch.sqrt((kept_var + pruned_var) / kept_var) if variance_conservation else torch.ones_like(kept_var)",
     "        kept_scale = torch.ones_like(kept_var)", T_HOOKS),
    ("filter: kept and pruned channel groups swapped", H + "filter.py",
     "groups = torch.stack((keep_f, 1.0 - keep_f), dim=1)", "groups = torch.stack((1.0 - keep_f, keep_f), dim=1)",
     T_HOOKS),
    ("filter: 1 x 1 maps use the signed sum, not |sum|", H + "filter.py",
     "else sums[:, :, 0].abs()", "else sums[:, :, 0]", T_HOOKS),
    ("filter: finite gamma with sqrt(M / N) instead of sqrt(N / M)", H + "filter.py",
     "g = gamma * torch.sqrt(pruned_var / kept_var)", "g = gamma * torch.sqrt(kept_var / pruned_var)", T_HOOKS),
    ("filter: a sample with no kept channel is filtered (zeroed)", H + "filter.py",
     "split = (kept_count > 0) & (kept_count < keep.shape[1])", "split = kept_count < keep.shape[1]", T_HOOKS),
    ("filter: kept variance rounded by the thread count", H + "filter.py",
     "kept_var, pruned_var = spread[:, 0] + eps, spread[:, 1] + eps",
     "kept_var, pruned_var = spread[:, 0] * (1 + 1e-3 * (torch.get_num_threads() - 1)) + eps, spread[:, 1] + eps",
     T_HOOKS),
    ("hooks: a hooked output changed in place is never recomputed", H + "core.py",
     "        if output._version == version or _only_harmless_since(output.grad_fn, node):",
     "        if True:", "tests/hooks/test_sip.py"),
    ("hooks: in-place LeakyReLU taken as harmless", H + "core.py",
     '_HARMLESS_IN_PLACE = frozenset({"ReluBackward0"})',
     '_HARMLESS_IN_PLACE = frozenset({"ReluBackward0", "LeakyReluBackward1"})', "tests/hooks/test_sip.py"),
    ("hooks: a recompute from an input changed in place is not refused", H + "core.py",
     "        if any(isinstance(a, torch.Tensor) and a._version != v for a, v in zip(args, arg_versions)):",
     "        if False:", "tests/hooks/test_sip.py"),
    ("policies: pca says it reads activations (recomputes for nothing)", H + "policies.py",
     '    argument = "rank"\n    reads_activation = False', '    argument = "rank"\n    reads_activation = True',
     "tests/hooks/test_sip.py"),
    ("hooks: target read from the signed logit gradient (no |.|)", H + "core.py",
     "return grad.detach().abs().argmax(dim=1)", "return grad.detach().argmax(dim=1)", T_HOOKS),
    ("hooks: every row gets row 0's target", H + "core.py",
     "record.targets = targets_from_logit_gradient(grad)",
     "record.targets = targets_from_logit_gradient(grad)[:1].expand(grad.shape[0])", T_HOOKS),
    ("hooks: rows read each other's targets (reversed order)", H + "core.py",
     "record.targets = targets_from_logit_gradient(grad)", "record.targets = targets_from_logit_gradient(grad).flip(0)",
     T_HOOKS),
    ("hooks: filter a graph backpropagated after the block", H + "core.py",
     "                if not self._active:  # a graph", "                if False:  # a graph", T_HOOKS),
    ("hooks: gradient hook on the module's input when shapes allow", H + "core.py",
     "            output.register_hook(tensor_hook)\n",
     "            (args[0] if args[0].shape == output.shape and args[0].requires_grad else output)"
     ".register_hook(tensor_hook)\n", T_HOOKS),
    ("policies: topq score sign flipped", H + "policies.py",
     'return torch.einsum("bchw,bchw->bc", activation, grad)', 'return -torch.einsum("bchw,bchw->bc", activation, grad)',
     T_HOOKS),
    ("policies: top-fraction keeps the lowest scores", H + "policies.py",
     "scores.topk(channel_count(share, scores.shape[1]), dim=1)",
     "scores.topk(channel_count(share, scores.shape[1]), dim=1, largest=False)", T_HOOKS),
    ("policies: cls uses row 0's class for every row", H + "policies.py",
     "self._threshold(layer, table[:, targets].T)", "self._threshold(layer, table[:, targets[:1].expand_as(targets)].T)",
     T_HOOKS),
    ("policies: ins z-score sign flipped", H + "policies.py",
     'z = (gap - stats["mean"]) / stats["std"]', 'z = (stats["mean"] - gap) / stats["std"]', T_HOOKS),
    ("policies: quantile cut strict (<)", H + "policies.py",
     "keep = live & (ranked <= cut)", "keep = live & (ranked < cut)", T_HOOKS),
    ("policies: Shapiro gate inverted", H + "policies.py",
     'keep = keep & (stats["shapiro"] < self.shapiro_threshold)[None, :]',
     'keep = keep & (stats["shapiro"] >= self.shapiro_threshold)[None, :]', T_HOOKS),
    ("policies: absq without |.|", H + "policies.py",
     "return (activation * grad).abs().mean(dim=(2, 3))", "return (activation * grad).mean(dim=(2, 3))", T_HOOKS),
    ("policies: act without the ReLU", H + "policies.py",
     "        return activation.clamp_min(0).mean(dim=(2, 3))", "        return activation.mean(dim=(2, 3))", T_HOOKS),
    ("policies: pca keeps the smallest singular directions", H + "policies.py",
     "        top = vectors[:, :, -rank:]\n        return (matrix @ top)",
     "        top = vectors[:, :, :rank]\n        return (matrix @ top)", T_HOOKS),
    ("policies: pca variance ratio inverted", H + "policies.py",
     "torch.sqrt((spread(before) + self.eps) / (spread(after) + self.eps))",
     "torch.sqrt((spread(after) + self.eps) / (spread(before) + self.eps))", T_HOOKS),
    ("policies: pca on CUDA skips the leading singular direction", H + "policies.py",
     "    top = vh[:, :rank].transpose(1, 2)", "    top = vh[:, 1:rank + 1].transpose(1, 2)", T_HOOKS),
    ("policies: pca on CUDA hands gesvda the wide orientation", H + "policies.py",
     "    tall = matrix.shape[1] >= matrix.shape[2]\n    with warnings", "    tall = matrix.shape[1] < matrix.shape[2]\n    with warnings",
     T_HOOKS),
    ("policies: pca on CUDA lets a reported gesvda failure through", H + "policies.py",
     "        except torch.linalg.LinAlgError:\n            return _truncate_rank_eigh(matrix, rank)",
     "        except torch.linalg.LinAlgError:\n            raise", T_HOOKS),
    ("policies: pca on CUDA trusts non-finite vectors gesvda did not report", H + "policies.py",
     "    if not bool(torch.isfinite(vh).all()):", "    if False:", T_HOOKS),
    ("policies: pca on CUDA passes on torch's advice to redo the SVD", H + "policies.py",
     '        warnings.simplefilter("ignore", UserWarning)', "        pass", T_HOOKS),
    ("sip: layer_ratio hooks the first convs, not the last", H + "sip.py",
     "return tuple(convs[-count:])", "return tuple(convs[:count])", T_HOOKS),
    # -- attribution ---------------------------------------------------------------------------
    ("smoothgrad: targets tiled [a, b, a, b] instead of [a, a, b, b]", A + "methods.py",
     "rows = targets.repeat_interleave(samples)", "rows = targets.repeat(samples)", T_ATTR),
    ("smoothgrad: seed ignored", A + "methods.py",
     "image_generator(context.options.seed, int(i))", "image_generator(0, int(i))", T_ATTR),
    ("smoothgrad: noise std without the pixel range", A + "methods.py",
     "std = options.smoothgrad_noise * context.pixel_range", "std = options.smoothgrad_noise", T_ATTR),
    ("smoothgrad: samples and images axes swapped", A + "methods.py",
     ".reshape(inputs.shape[0], samples, *inputs.shape[1:]).mean(dim=1)",
     ".reshape(samples, inputs.shape[0], *inputs.shape[1:]).mean(dim=0)", T_ATTR),
    ("ig: noise baseline without the pixel range", A + "methods.py",
     "baseline = lows + context.pixel_range * uniform.to(inputs.dtype)",
     "baseline = lows + uniform.to(inputs.dtype)", T_ATTR),
    ("inputgrad: the plain gradient (input factor dropped)", A + "methods.py",
     "return InputXGradient(forward).attribute(inputs, additional_forward_args=(targets,))",
     "return Saliency(forward).attribute(inputs, abs=False, additional_forward_args=(targets,))", T_ATTR),
    ("gradcam: no ReLU on the map", A + "methods.py", "relu_attributions=True", "relu_attributions=False", T_ATTR),
    ("gradcam: nearest instead of bilinear upsampling", A + "methods.py",
     'interpolate_mode="bilinear"', 'interpolate_mode="nearest"', T_ATTR),
    ("saliency map: signed mean (|.| dropped)", A + "methods.py",
     "magnitude = attribution.detach().abs()", "magnitude = attribution.detach()", T_ATTR),
    ("saliency map: rounding that depends on the thread count", A + "methods.py",
     'return magnitude.mean(dim=1) if reduce == "mean"',
     'return magnitude.mean(dim=1) * (1 + 1e-4 * (torch.get_num_threads() - 1)) if reduce == "mean"', T_ATTR),
    ("engine: every row explains row 0's target", A + "engine.py",
     "return logits.gather(1, resolve_predicted(chosen, logits)[:, None])",
     "return logits.gather(1, resolve_predicted(chosen[:1].expand_as(chosen), logits)[:, None])", T_ATTR),
    ("engine: noisy methods explain each perturbed copy's own prediction", A + "engine.py",
     "                targets = resolve_predicted(targets, clean_logits[0])\n", "", T_ATTR),
    ("engine: pixel range from std instead of 1 / std", A + "engine.py",
     "float(np.mean([1.0 / s for s in pre.std]))", "float(np.mean(pre.std))", T_ATTR),
    ("engine: black baseline is the all-zero input", A + "engine.py",
     "classifier.preprocessing.normalize(torch.zeros(inputs.shape[1], 1, 1, device=device))",
     "torch.zeros(inputs.shape[1], 1, 1, device=device)", T_ATTR),
    # -- evaluation metrics --------------------------------------------------------------------
    ("metrics: box left edge off by one (floor)", E,
     "c0 = torch.ceil(boxes[..., 0] - 0.5)", "c0 = torch.floor(boxes[..., 0] - 0.5)", T_EVAL),
    ("metrics: box bottom edge exclusive", E,
     "(rows <= r1[..., None])", "(rows < r1[..., None])", T_EVAL),
    ("metrics: pointing game reads the maximum as (col, row)", E,
     "torch.stack((flat_index // width, flat_index % width), dim=1)",
     "torch.stack((flat_index % width, flat_index // width), dim=1)", T_EVAL),
    ("metrics: pointing game divides by the height", E,
     "torch.stack((flat_index // width, flat_index % width), dim=1)",
     "torch.stack((flat_index // height, flat_index % height), dim=1)", T_EVAL),
    ("metrics: centre baseline at (width/2, height/2)", E,
     "[[height // 2, width // 2]]", "[[width // 2, height // 2]]", T_EVAL),
    ("metrics: pointing counts invalid (padding) boxes", E,
     "& valid & (c0 <= c1)", "& (c0 <= c1)", T_EVAL),
    ("metrics: box mask counts invalid (padding) boxes", E,
     "in_cols[..., None, :] & valid[..., None, None]", "in_cols[..., None, :]", T_EVAL),
    ("metrics: energy counts negative mass", E,
     "positive = maps.clamp_min(0).double()", "positive = maps.double()", T_EVAL),
    ("metrics: mu_in without |.|", E, "magnitude = maps.abs().double()", "magnitude = maps.double()", T_EVAL),
    ("metrics: mu_in_w area ratio inverted", E, "(share * area / box_area)", "(share * box_area / area)", T_EVAL),
    ("metrics: blur kernel not normalised", E, "    kernel = kernel / kernel.sum()\n", "", T_EVAL),
    ("metrics: blur along rows only", E,
     "    return F.conv2d(out, kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1), groups=channels)",
     "    return out[:, :, radius:-radius]", T_EVAL),
    ("metrics: deletion order reversed", E,
     "descending=most_relevant_first, stable=True", "descending=not most_relevant_first, stable=True", T_EVAL),
    ("metrics: AUC step 1/S+1 instead of 1/S", E,
     "dx=1.0 / (curves.shape[1] - 1)", "dx=1.0 / curves.shape[1]", T_EVAL),
    # -- render --------------------------------------------------------------------------------
    ("render: colormap direction reversed", R,
     "scaled = (normalize_map(saliency, clip_percentile, scale) * 255)",
     "scaled = ((1.0 - normalize_map(saliency, clip_percentile, scale)) * 255)", T_RENDER),
    ("render: clipped at the (100 - q)th percentile", R,
     "top = percentile(saliency, clip_percentile)", "top = percentile(saliency, 100.0 - clip_percentile)", T_RENDER),
    ("render: sparse map loses the fallback to its maximum", R,
     "        top = float(saliency.max(initial=0.0))", "        top = 0.0", T_RENDER),
    ("render: negative values not clipped to 0", R,
     "np.clip(saliency / top, 0.0, 1.0)", "np.clip(saliency / top, -1.0, 1.0)", T_RENDER),
    ("render: alpha weights swapped", R, "1.0 - alpha, colored, alpha", "alpha, colored, 1.0 - alpha", T_RENDER),
    ("render: each row block gets its own colour scale", R,
     "heatmap(saliency[rows], colormap, clip_percentile, scale=scale)",
     "heatmap(saliency[rows], colormap, clip_percentile, scale=None)", T_RENDER),
    ("explanation: a map of another class saved under the top-1 map's name", "sipgrad/attribution/explanation.py",
     '        base = str(directory / (f"{stem}.{suffix}" if explained == top1 else',
     '        base = str(directory / (f"{stem}.{suffix}" if True else',
     "tests/cli/test_cli.py::test_explaining_one_image_for_two_classes_keeps_both_maps"),
    ("SIP: a bad policy value's error without the spec it came from", "sipgrad/hooks/sip.py",
     "            if argument and field_name in str(error):", "            if False:",
     "tests/cli/test_cli.py::test_bad_input_gets_one_line_and_nonzero_exit"),
    # Added 2026-12-01: a review found random maps changing with --batch-size.
    ("explain: random methods seeded from the row in its call, not its position in the run",
     "sipgrad/attribution/explain.py",
     "parts.append(engine(prepared.inputs[rows], targets[rows], indices=positions[rows]))",
     "parts.append(engine(prepared.inputs[rows], targets[rows], indices=rows))",
     "tests/attribution/test_explain.py"),
    ("explain CLI: each batch's images numbered from 0", "cli/explain_cmd.py",
     "result = explain(classifier, images, sip=sip, indices=positions, **common)",
     "result = explain(classifier, images, sip=sip, **common)",
     "tests/cli/test_cli.py::test_explain_gives_random_methods_the_same_maps_in_any_batch_size"),
    ("array_to_rgb: float images truncated, not rounded", "sipgrad/io/images.py",
     "array = np.rint(np.clip(values * scale, 0, 255)).astype(np.uint8)",
     "array = np.clip(values * scale, 0, 255).astype(np.uint8)", "tests/render/test_overlay_values.py"),
    ("engine: NaN inputs not refused", A + "engine.py",
     "    if not bool(finite.all()):", "    if False:", "tests/attribution/test_engine.py"),
    ("engine: logits not compared with the class names", A + "engine.py",
     "        if logits.shape[1] != len(self.classifier.classes):", "        if False:",
     "tests/attribution/test_engine.py"),
    ("engine: inputs not cast to the model's dtype", A + "engine.py",
     ".to(device=device, dtype=next(classifier.module.parameters()).dtype)", ".to(device=device)",
     "tests/attribution/test_engine.py"),
    ("engine: a model returning a tuple is not refused", A + "engine.py",
     "        if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != rows:",
     "        if isinstance(logits, torch.Tensor) and logits.dim() != 2:", "tests/attribution/test_engine.py"),
    ("SIP: a layer without a feature map not refused", H + "sip.py",
     "        if output.dim() != 4:\n            raise SipgradError(f\"SIP layer", "        if False:\n            raise SipgradError(f\"SIP layer",
     "tests/attribution/test_engine.py"),
]


if __name__ == "__main__":
    sys.exit(run_mutations(MUTATIONS, COPIED, sys.argv[1:]))
