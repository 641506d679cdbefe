"""Mutation check of the hypergradient engine: each deliberate bug must make a test fail.

    python benchmarks/hypergradient_mutations.py          # every mutation
    python benchmarks/hypergradient_mutations.py fused    # only those whose title contains "fused"

Mutates a worktree copy of HEAD (``_mutations.run_mutations``), over which the working
tree's current sipgrad/engines/hypergrad and tests/engines/hypergrad (and
tests/conftest.py) are laid, so the live tree is never touched and the check may run
while those files are being edited. Exit status 1 if any mutation survived or no longer
matches the code.
"""

from __future__ import annotations

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from _mutations import run_mutations  # noqa: E402

COPIED = ("sipgrad/engines/hypergrad", "tests/engines/hypergrad", "tests/conftest.py")
H = "sipgrad/engines/hypergrad/"
T = "tests/engines/hypergrad/"
MUTATIONS = [
    (
        "rfho L2 factor 2 dropped",
        H + "updates.py",
        "return HeavyBall(loss, tuple(penalties), l2_scale=2.0)",
        "return HeavyBall(loss, tuple(penalties), l2_scale=1.0)",
        T + "test_updates.py " + T + "test_modes.py",
    ),
    (
        "weight decay outside momentum",
        H + "updates.py",
        "            g = gradient[name] + extra[name] if name in extra else gradient[name]\n            v = mu * velocity[name] + g\n            new_velocity[name] = v\n            new_weights[name] = w - eta * v\n        return new_weights, new_velocity",
        "            v = mu * velocity[name] + gradient[name]\n            new_velocity[name] = v\n            new_weights[name] = w - eta * (v + extra[name] if name in extra else v)\n        return new_weights, new_velocity",
        T + "test_updates.py",
    ),
    (
        "sign-only hypergradient",
        H + "modes.py",
        "        out[name] = flat[offset:offset + h.numel()].reshape(h.shape)",
        "        out[name] = torch.sign(flat[offset:offset + h.numel()]).reshape(h.shape)",
        T + "test_modes.py",
    ),
    (
        "wrong batch index in the reverse sweep",
        H + "modes.py",
        "        return problem.update(w, v, problem.batch(step), {**fixed, **h})",
        "        return problem.update(w, v, problem.batch(max(step - 1, 0)), {**fixed, **h})",
        T + "test_modes.py",
    ),
    (
        "wrong batch index in the schedule",
        H + "problem.py",
        "        index = on_device[step]",
        "        index = on_device[step // 2]",
        T + "test_modes.py",
    ),
    (
        "projection removed (no range)",
        H + "outer.py",
        "            out[name] = value.clamp(low, high)",
        "            out[name] = value",
        T + "test_outer.py",
    ),
    (
        "Adam bias correction (1/(1-b^k)) dropped",
        H + "outer.py",
        "            m_hat = self.first[name] / (1 - c.beta1 ** self.count)",
        "            m_hat = self.first[name]",
        T + "test_outer.py",
    ),
    (
        "fused: L2 scale dropped in the tangent",
        H + "updates.py",
        "                    z_v.addcmul_(z_w, self.l2_scale * rho)",
        "                    z_v.addcmul_(z_w, rho)",
        T + "test_updates.py",
    ),
    (
        "fused: mu row uses the new velocity",
        H + "updates.py",
        "                z_v[rows[self.momentum]] += velocity[name]",
        "                z_v[rows[self.momentum]] += new_velocity[name]",
        T + "test_updates.py",
    ),
    (
        "fused: eta row dropped",
        H + "updates.py",
        "                z_w[rows[self.learning_rate]] -= new_velocity[name]",
        "                pass",
        T + "test_updates.py " + T + "test_modes.py",
    ),
    (
        "fused: eta row uses the old velocity",
        H + "updates.py",
        "                z_w[rows[self.learning_rate]] -= new_velocity[name]",
        "                z_w[rows[self.learning_rate]] -= velocity[name]",
        T + "test_updates.py " + T + "test_modes.py",
    ),
    (
        "checkpoint segment off by one",
        H + "modes.py",
        "        for step in range(start, end - 1):",
        "        for step in range(start, end - 2):",
        T + "test_modes.py",
    ),
    (
        "finiteness never checked",
        H + "modes.py",
        "        if not bool(ok.all()):",
        "        if False:",
        T + "test_modes.py",
    ),
    (
        "report value before the update",
        H + "report.py",
        "        hyperparameters={name: (_plain(outer.updated[name])",
        "        hyperparameters={name: (_plain(outer.used[name])",
        T + "test_report.py",
    ),
    (
        "velocity adjoint dropped in reverse",
        H + "modes.py",
        "        pairs += [(out, adjoint_v[name]) for name, out in new_v.items()]",
        "        pairs += [(out, torch.zeros_like(adjoint_v[name])) for name, out in new_v.items()]",
        T + "test_modes.py",
    ),
    (
        "fused forward sweep: L1 term with the L2 form",
        H + "updates.py",
        "                    v.addcmul_(torch.sign(w), rho)",
        "                    v.addcmul_(w, rho)",
        T + "test_modes.py " + T + "test_updates.py",
    ),
    (
        "fused forward sweep: weights step with +eta",
        H + "updates.py",
        "            new_weights[name] = torch.addcmul(w, v, eta, value=-1)",
        "            new_weights[name] = torch.addcmul(w, v, eta, value=1)",
        T + "test_modes.py " + T + "test_updates.py",
    ),
    (
        "wrong batch index in the fused reverse sweep",
        H + "modes.py",
        "        return self.problem.batch(step)",
        "        return self.problem.batch(max(step - 1, 0))",
        T + "test_modes.py",
    ),
    (
        "fused reverse: velocity adjoint (mu q) dropped",
        H + "updates.py",
        "        return new_adjoint_w, {name: mu * q[name] for name in weights}, out",
        "        return new_adjoint_w, {name: torch.zeros_like(q[name]) for name in weights}, out",
        T + "test_updates.py " + T + "test_modes.py",
    ),
    (
        "fused reverse: q without the learning rate's share",
        H + "updates.py",
        "        q = {name: torch.addcmul(adjoint_v[name], adjoint_w[name], eta, value=-1) for name in weights}",
        "        q = {name: torch.addcmul(adjoint_v[name], adjoint_w[name], eta, value=1) for name in weights}",
        T + "test_updates.py " + T + "test_modes.py",
    ),
    (
        "fused reverse: L2 term missing from the weight adjoint",
        H + "updates.py",
        "                    p.addcmul_(q[name], self.l2_scale * rho)",
        "                    pass",
        T + "test_updates.py " + T + "test_modes.py",
    ),
    (
        "fused reverse: mu share with the new velocity",
        H + "updates.py",
        "            out[self.momentum] = out[self.momentum] + _dot(q, velocity)",
        "            out[self.momentum] = out[self.momentum] + _dot(q, new_velocity)",
        T + "test_updates.py " + T + "test_modes.py",
    ),
    (
        "fused reverse: loss-hyperparameter (mixed) share dropped",
        H + "updates.py",
        "            out[name] = out[name] + share",
        "            out[name] = out[name]",
        T + "test_updates.py " + T + "test_modes.py",
    ),
    (
        "a backward step that rebuilds its pass (trajectory; a segment's last step) on the wrong batch",
        H + "modes.py",
        "        batch = None if graph is not None else self.batch(step)",
        "        batch = None if graph is not None else self.batch(max(step - 1, 0))",
        T + "test_modes.py",
    ),
    (
        "a backward step's rebuild computes the weight gradient nobody reads",
        H + "updates.py",
        "                graph = primal_pass(self.network, weights, batch, weight_gradient=False, keep=True)[1]",
        "                graph = primal_pass(self.network, weights, batch, weight_gradient=True, keep=True)[1]",
        T + "test_fused.py",
    ),
    (
        "stored activations: the previous step's graph used",
        H + "modes.py",
        "            stored[step] = (weights, velocity, graph)",
        "            stored[step] = (weights, velocity, stored[step - 1][2] if step else graph)",
        T + "test_modes.py",
    ),
    (
        "fused HVP: the delta dW_k term of the back-propagated tangent dropped",
        H + "fused.py",
        "                below.transpose(0, 1).baddbmm_(g.expand(m, examples, out), dw)",
        "                pass",
        T + "test_fused.py",
    ),
    (
        "fused HVP: the delta^T dh term of the weight-gradient tangent dropped",
        H + "fused.py",
        "                dgw.baddbmm_(g.t().expand(m, out, examples), dh_in.transpose(0, 1))",
        "                pass",
        T + "test_fused.py",
    ),
    (
        "fused HVP: delta^T dh read with examples and directions swapped",
        H + "fused.py",
        "                dgw.baddbmm_(g.t().expand(m, out, examples), dh_in.transpose(0, 1))",
        "                dgw.baddbmm_(g.t().expand(m, out, examples), dh_in.reshape(m, examples, features))",
        T + "test_fused.py",
    ),
    (
        "fused HVP: softmax tangent sign flipped",
        H + "fused.py",
        "    ddelta = dh - (pu * dh).sum(2, keepdim=True)",
        "    ddelta = dh + (pu * dh).sum(2, keepdim=True)",
        T + "test_fused.py",
    ),
    (
        "fused HVP: ReLU mask left off the forward tangent",
        H + "fused.py",
        "                _relu_tangent_(dh, saved[index])",
        "                pass",
        T + "test_fused.py",
    ),
    (
        "fused HVP: ReLU mask left off the back-propagated tangent",
        H + "fused.py",
        "            _relu_tangent_(dg, state)",
        "            pass",
        T + "test_fused.py",
    ),
    (
        "fused HVP: the ReLU mask computed but not written back (not in place)",
        H + "fused.py",
        "    torch.ops.aten.threshold_backward.grad_input(tangent, relu_output.unsqueeze(1), 0, grad_input=tangent)",
        "    torch.ops.aten.threshold_backward(tangent, relu_output.unsqueeze(1), 0)",
        T + "test_fused.py",
    ),
    (
        "workspace: one dz buffer for every layer (a layer overwrites the tangent below it)",
        H + "fused.py",
        '            dz = workspace.empty(f"dz{index}", (examples, m * out), h)',
        '            dz = workspace.empty("dz", (examples, m * out), h)',
        T + "test_fused.py",
    ),
    (
        "workspace: a buffer of another dtype handed out",
        H + "fused.py",
        "        if tensor is None or tensor.shape != shape or tensor.dtype != like.dtype or tensor.device != like.device:",
        "        if tensor is None or tensor.shape != shape or tensor.device != like.device:",
        T + "test_fused.py",
    ),
    (
        "fused HVP: tangent from below through direction 0's weight instead of W",
        H + "fused.py",
        "                dz.view(examples * m, out).addmm_(dh.reshape(examples * m, features), w.t())",
        "                dz.view(examples * m, out).addmm_(dh.reshape(examples * m, features), dw[0].t())",
        T + "test_fused.py",
    ),
    (
        "written-out reverse: H p_w' instead of H q",
        H + "updates.py",
        "            products = hessian_products(self.network, weights, {n: t.unsqueeze(0) for n, t in q.items()}, graph)",
        "            products = hessian_products(self.network, weights, {n: t.unsqueeze(0) for n, t in adjoint_w.items()},"
        " graph)",
        T + "test_fused.py",
    ),
    (
        "written-out reverse: the rebuilt pass at the wrong weights",
        H + "updates.py",
        "                graph = primal_pass(self.network, weights, batch, weight_gradient=False, keep=True)[1]",
        "                graph = primal_pass(self.network, {n: 0.99 * t for n, t in weights.items()}, batch,"
        " weight_gradient=False, keep=True)[1]",
        T + "test_fused.py",
    ),
    (
        "written-out activations: the probabilities left out of the state memory",
        H + "fused.py",
        "        return kept + list(self.errors.values()) + [self.probabilities]",
        "        return kept + list(self.errors.values())",
        T + "test_fused.py",
    ),
    (
        "written-out pass taken for a loss that reads hyperparameters",
        H + "updates.py",
        "        return self.network is not None and not self.loss_hyper and self.network.applies(weights, batch)",
        "        return self.network is not None and self.network.applies(weights, batch)",
        T + "test_fused.py",
    ),
    (
        "uint8 labels passed on as they are",
        H + "problem.py",
        "    train_x, train_y = _flat(data.train, dtype, device), _labels(data.train, device)",
        "    train_x, train_y = _flat(data.train, dtype, device), data.train.labels.to(device)",
        T + "test_fused.py",
    ),
    (
        "fused HVP: the bias tangent left out of the forward tangent",
        H + "fused.py",
        "                dz.add_(directions[op.bias].reshape(1, m * out))",
        "                pass",
        T + "test_fused.py",
    ),
    (
        "fused HVP: the bias products zeroed",
        H + "fused.py",
        "                hvp[op.bias] = dg2.sum(0).view(m, out)",
        "                hvp[op.bias] = 0 * dg2.sum(0).view(m, out)",
        T + "test_fused.py",
    ),
    (
        "start weights kept as given (a model's parameters stay tracked by autograd)",
        H + "problem.py",
        '        object.__setattr__(self, "weights", {name: w.detach() for name, w in self.weights.items()})',
        "        pass",
        T + "test_fused.py",
    ),
    (
        "forward mode: a fresh workspace at every step",
        H + "modes.py",
        "                          workspace=workspace)",
        "                          workspace=None)",
        T + "test_fused.py",
    ),
    (
        "finiteness watch: only the maximum (misses -inf)",
        H + "modes.py",
        "        extremes = [x for t in tensors if t.numel() for x in torch.aminmax(t.detach())]",
        "        extremes = [torch.aminmax(t.detach())[1] for t in tensors if t.numel()]",
        T + "test_fused.py",
    ),
    (
        "finiteness watch: names the last failing step of its batch",
        H + "modes.py",
        "            first = self.steps[int((~ok).nonzero()[0, 0])]",
        "            first = self.steps[int((~ok).nonzero()[-1, 0])]",
        T + "test_modes.py",
    ),
    (
        "reverse sweep: the final finiteness check dropped",
        H + "modes.py",
        "            watch.add(step, _values(adjoint_w, adjoint_v))\n    watch.check()\n",
        "            watch.add(step, _values(adjoint_w, adjoint_v))\n",
        T + "test_modes.py",
    ),
    (
        "vjp of the update: outputs without a graph handed to autograd",
        H + "modes.py",
        "        pairs = [(out, cotangent) for out, cotangent in pairs if out.requires_grad]",
        "        pass",
        T + "test_modes.py",
    ),
    (
        "fused state step: sign(0) = +1 in the L1 term",
        H + "updates.py",
        "                    v.addcmul_(torch.sign(w), rho)",
        "                    v.addcmul_(torch.where(w >= 0, 1.0, -1.0).to(w.dtype), rho)",
        T + "test_fused.py",
    ),
    (
        "outer loop: an out-of-range start projected silently",
        H + "outer.py",
        "            raise SipgradError(f\"start {name}={value.tolist()} is outside its range [{low:g}, {high:g}]\")",
        "            start[name] = value.clamp(low, high)",
        T + "test_outer.py",
    ),
    (
        "schedule: one permutation repeated every epoch",
        H + "problem.py",
        "    rows = [torch.randperm(examples, generator=generator)[:per_epoch * batch_size].view(per_epoch, batch_size)\n            for _ in range(epochs)]",
        "    order = torch.randperm(examples, generator=generator)\n    rows = [order[:per_epoch * batch_size].view(per_epoch, batch_size) for _ in range(epochs)]",
        T + "test_modes.py",
    ),
    (
        "report: training accuracy measured on the validation split",
        H + "report.py",
        "        training_accuracy=problem.accuracy(weights, data.train),",
        "        training_accuracy=problem.accuracy(weights, data.validation),",
        T + "test_report.py",
    ),
    (
        "a device that cannot hold the problem accepted",
        H + "problem.py",
        "    device = usable_device(device)\n    _check_labels(data)",
        "    _check_labels(data)",
        T + "test_modes.py",
    ),
    (
        "accuracy compared against the first label only",
        H + "problem.py",
        "            return float((predicted == _labels(split, device)).double().mean())",
        "            return float((predicted == split.labels.to(device)[:1]).double().mean())",
        T + "test_report.py " + T + "test_modes.py",
    ),
    # Added 2026-12-01 after a review of the engine found each of these gaps.
    (
        "reverse modes: a weight no differentiated hyperparameter reaches is not made a leaf",
        H + "updates.py",
        "            weights = {name: w if w.requires_grad else w.detach().requires_grad_() for name, w in weights.items()}\n",
        "            pass\n",
        T + "test_modes.py",
    ),
    (
        "batch norm in training mode accepted",
        H + "problem.py",
        "    _refuse_running_statistics(model)\n",
        "",
        T + "test_modes.py",
    ),
    (
        "steps not checked at the schedule",
        H + "problem.py",
        '    check_count("steps", steps)\n',
        "",
        T + "test_modes.py",
    ),
    (
        "hidden widths not checked",
        H + "problem.py",
        "        check_count(\"a hidden layer's width\", width)",
        "        pass",
        T + "test_modes.py",
    ),
    (
        "forward mode: torch's ZeroTensor failure passed on raw",
        H + "modes.py",
        '        if "ZeroTensors are immutable" not in str(error):',
        "        if True:",
        T + "test_modes.py",
    ),
    (
        "a hyperparameter the update does not read accepted",
        H + "modes.py",
        "    _check_names_and_shapes(problem.update, values)\n",
        "",
        T + "test_modes.py",
    ),
    (
        "a per-layer vector of the wrong length accepted",
        H + "modes.py",
        "        if length is not None and tuple(value.shape) != (length,):",
        "        if False:",
        T + "test_modes.py",
    ),
    (
        "a vector where a scalar goes accepted",
        H + "modes.py",
        "        if length is None and value.numel() != 1:",
        "        if False:",
        T + "test_modes.py",
    ),
    (
        "the outer loop checks its mode's options only at the first step",
        H + "outer.py",
        "    check_arguments(problem, start, mode, wrt, **mode_options)\n",
        "",
        T + "test_outer.py",
    ),
    (
        "a negative penalty index accepted",
        H + "updates.py",
        '            check_count(f"penalty {self.hyper!r}: index", self.index, minimum=0)',
        "            pass",
        T + "test_modes.py",
    ),
]


if __name__ == "__main__":
    sys.exit(run_mutations(MUTATIONS, COPIED, sys.argv[1:]))
