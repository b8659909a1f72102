"""Training speed options on the tiny model: each one leaves the loss what it was (speed is measured in
benchmarks/train_speed.py, never here)."""

import pytest
import torch

from components.training import batches, options
from components.training import loss as loss_mod
from components.training.schedule import batch_schedule
from components.data.prepare import load_prepared
from test_train import prepared, train  # noqa: F401  (the prepared tiny data set, and a train run with overrides)


def curve(out):
    return [float(line.split("\t")[1]) for line in (out / "train_curve.tsv").read_text().splitlines()[1:]]


@pytest.fixture(scope="module")
def rows_and_model(prepared):  # noqa: F811
    from components.model.base_model import load_base
    from components.methods import Context, get_method

    _, p = prepared
    rows = load_prepared(p.paths.prepared)["train"].to_list()[:12]
    model, tok = load_base(p.paths.base_model)
    torch.manual_seed(0)
    model = get_method("lora").apply(model, p.train.lora, Context(steps=1, base_dir=str(p.paths.base_model), seed=0))
    with torch.no_grad():  # LoRA's B starts at zero: give it weights so that the adapter takes part
        for n, w in model.named_parameters():
            if "lora_B" in n:
                w.normal_(0, 0.2)
    model.eval()
    return rows, model, tok


def test_loss_with_logits_only_at_labels_equals_the_models_own_loss(rows_and_model):
    rows, model, tok = rows_and_model
    batch = batches.collate(rows, tok.pad_token_id)
    assert not bool(batch["attention_mask"].all())  # padded rows: the mask matters
    with torch.no_grad():
        ours, theirs = loss_mod.lm_loss(model, batch), model(**batch).loss
    assert abs(float(ours) - float(theirs)) < 1e-5


def test_packed_loss_and_gradients_equal_unpacked(rows_and_model):
    """Block-diagonal attention and restarted positions: packing changes nothing but the layout."""
    rows, model, tok = rows_and_model
    longest = max(len(r["input_ids"]) for r in rows)
    packed = batches.pack(rows, tok.pad_token_id, capacity=2 * longest)
    assert packed["input_ids"].shape[0] < len(rows)  # several examples share a row
    assert "attention_mask" not in packed
    padded = batches.collate(rows, tok.pad_token_id)
    assert packed["input_ids"].numel() < padded["input_ids"].numel()
    assert int((packed["labels"] != -100).sum()) == int((padded["labels"][:, 1:] != -100).sum())
    grads = []
    for batch in (padded, packed):
        model.zero_grad(set_to_none=True)
        loss = loss_mod.lm_loss(model, batch)
        loss.backward()
        grads.append((float(loss.detach()), {n: w.grad.clone() for n, w in model.named_parameters() if w.requires_grad}))
    (a, ga), (b, gb) = grads
    assert abs(a - b) < 1e-5
    assert all(torch.allclose(ga[n], gb[n], atol=1e-5, rtol=1e-4) for n in ga)
    model.zero_grad(set_to_none=True)


def test_packing_is_wrong_without_restarted_positions(rows_and_model):
    """The check above has teeth: the same packed rows read as one long sequence give another loss."""
    rows, model, tok = rows_and_model
    longest = max(len(r["input_ids"]) for r in rows)
    packed = batches.pack(rows, tok.pad_token_id, capacity=2 * longest)
    padded = batches.collate(rows, tok.pad_token_id)
    with torch.no_grad():
        right = float(loss_mod.lm_loss(model, padded))
        wrong = float(loss_mod.lm_loss(model, {k: v for k, v in packed.items() if k != "position_ids"}))
    assert abs(right - wrong) > 1e-3


def test_random_batches_cover_the_data():
    lengths = [5 + (i * 7) % 40 for i in range(320)]
    sched = batch_schedule(lengths, 8, 40, seed=1, group=False)
    assert len(sched) == 40 and all(len(b) == 8 for b in sched)
    assert len({i for b in sched for i in b}) == 320
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in sched) / len(sched)
    assert spread > 20  # not grouped by length


@pytest.mark.parametrize("option", [{"packing": True}, {"gradient_checkpointing": True}, {"compile": True}])
def test_option_trains_to_the_same_curve(prepared, tmp_path, option):  # noqa: F811
    """Packing (random batches), gradient checkpointing and torch.compile follow the plain run's loss curve."""
    _, p = prepared
    base = {"steps": 4, "checkpoint_every": 4, "group_by_length": False}
    if "gradient_checkpointing" not in option:  # other shapes / compiled kernels draw other dropout masks
        base["lora.dropout"] = 0.0
    if "compile" in option:  # compiling takes most of a minute on 2 cores: fewer steps
        base.update(steps=2, checkpoint_every=2)
        p = p.model_copy(deep=True)
        p.prepare.max_length = 256  # rows of 256 tokens: three of the tiny examples fit in one
    ref = train(p, tmp_path / "ref", base)
    got = train(p, tmp_path / "opt", {**base, **option})
    a, b = curve(tmp_path / "ref"), curve(tmp_path / "opt")
    assert len(a) == len(b) == base["steps"]
    assert max(abs(x - y) for x, y in zip(a, b)) < 1e-4, (a, b)
    assert got["final_loss"] == pytest.approx(ref["final_loss"], abs=1e-4)
    if "packing" in option:
        assert got["padding_fraction"] < ref["padding_fraction"]


def test_packing_refuses_prompt_methods(prepared, tmp_path):  # noqa: F811
    from components.core.errors import ConfigError

    _, p = prepared
    with pytest.raises(ConfigError, match="packing needs a method whose adapters sit inside the model's layers"):
        train(p, tmp_path, {"method": "prompt", "packing": True, "steps": 2})


@pytest.mark.parametrize("group,packed", [(True, False), (False, False), (True, True)])
def test_token_budget_batches_fit_the_budget_and_cover_each_row_once(group, packed):
    lengths = [5 + (i * 7) % 40 for i in range(320)] + [450]  # one row longer than the budget
    budget = 400
    sched = batch_schedule(lengths, 8, 400, seed=1, group=group, tokens=budget, packed=packed)
    first_epoch, seen = [], 0
    for b in sched:  # the first epoch's batches: until every row has been taken once
        first_epoch.append(b)
        seen += len(b)
        if seen >= len(lengths):
            break
    assert sorted(i for b in first_epoch for i in b) == list(range(len(lengths)))
    for b in sched:
        cost = sum(lengths[i] for i in b) if packed else len(b) * max(lengths[i] for i in b)
        assert cost <= budget or len(b) == 1
    sizes = {len(b) for b in sched}
    assert len(sizes) > 1 and max(sizes) > 8  # short rows: more of them a step
    assert sched == batch_schedule(lengths, 8, 400, seed=1, group=group, tokens=budget, packed=packed)
    if group:  # length grouping: less padding than random batches under the same budget
        rand = batch_schedule(lengths, 8, 400, seed=1, group=False, tokens=budget)
        pad = lambda s: sum(len(b) * max(lengths[i] for i in b) - sum(lengths[i] for i in b) for b in s)  # noqa: E731
        assert packed or pad(sched) < 0.5 * pad(rand)


def test_token_budget_scales_the_learning_rate_by_the_square_root_rule(prepared):  # noqa: F811
    _, p = prepared
    cfg = p.train.model_copy(update={"batch_size": 4, "batch_tokens": 512, "lr": 1e-3})
    lr = cfg.method_config().lr or 1e-3
    assert cfg.step_lr(16) == pytest.approx(lr * 2)  # 4x the rows: 2x the lr
    assert cfg.model_copy(update={"lr_scaling": "none"}).step_lr(16) == pytest.approx(lr)
    assert cfg.model_copy(update={"batch_tokens": None}).step_lr(16) == pytest.approx(lr)


def test_training_with_a_token_budget(prepared, tmp_path):  # noqa: F811
    _, p = prepared
    rows = load_prepared(p.paths.prepared)["train"].to_list()
    budget = 6 * max(r["length"] for r in rows)
    m = train(p, tmp_path, {"batch_tokens": budget, "steps": 30})
    assert m["batch_tokens"] == budget and m["rows_per_step"] >= 6
    assert m["lr"] == pytest.approx(p.train.method_lr() * (m["rows_per_step"] / p.train.batch_size) ** 0.5)
    assert m["final_loss"] < m["first_loss"] - 0.05  # learns (a random tiny base moves slowly)
    assert m["padding_fraction"] < 0.5


def test_lm_loss_gradients_equal_the_models_own(rows_and_model):
    """The chunked vocabulary projection: the adapter's gradients are those of `model(**batch).loss`."""
    rows, model, tok = rows_and_model
    batch = batches.collate(rows, tok.pad_token_id)
    assert loss_mod._frozen_plain_linear(loss_mod.decoder_and_head(model)[1])  # the chunked path is the one tested
    grads = []
    for loss_of in (lambda: loss_mod.lm_loss(model, batch), lambda: model(**batch).loss):
        model.zero_grad(set_to_none=True)
        loss_of().backward()
        grads.append({n: w.grad.clone() for n, w in model.named_parameters() if w.requires_grad})
    model.zero_grad(set_to_none=True)
    ours, theirs = grads
    assert all(torch.allclose(ours[n], theirs[n], atol=1e-6, rtol=1e-4) for n in ours)


def step_run(model, tok, rows, schedule, norm="tokens", micro=None):
    """What loss.step_backward reads of a TrainRun, for the tiny model in fp32."""
    from types import SimpleNamespace

    cfg = SimpleNamespace(loss_norm=norm, micro_batch_tokens=micro, packing=False)
    return SimpleNamespace(params=SimpleNamespace(train=cfg), label_mean=batches.mean_label_tokens(rows, schedule),
                           tokenizer=tok, max_length=max(len(r["input_ids"]) for r in rows), device=torch.device("cpu"),
                           model=model, autocast=None, scaler=None)


def adapter_grads(model) -> dict:
    out = {n: w.grad.clone() for n, w in model.named_parameters() if w.requires_grad}
    model.zero_grad(set_to_none=True)
    return out


@pytest.mark.parametrize("norm", ["tokens", "batch"])
def test_loss_norm_tokens_weighs_every_token_the_same(rows_and_model, norm):
    """loss_norm=tokens: the steps' gradients sum to those of the per-token mean over all their rows x the steps, as
    one big batch; loss_norm=batch (each step's own mean) weighs a short-answer step's tokens more."""
    rows, model, tok = rows_and_model
    order = sorted(range(len(rows)), key=lambda i: batches.label_tokens(rows[i]))
    schedule = [order[:8], order[8:]]  # 8 short-answer rows, then 4 long ones: unequal label tokens per step
    counts = [sum(batches.label_tokens(rows[i]) for i in s) for s in schedule]
    assert counts[0] != counts[1]
    run = step_run(model, tok, rows, schedule, norm)
    assert run.label_mean == pytest.approx(sum(counts) / 2)
    model.zero_grad(set_to_none=True)
    for s in schedule:
        loss_mod.step_backward(run, [rows[i] for i in s])
    steps = adapter_grads(model)
    (loss_mod.lm_loss(model, batches.collate(rows, tok.pad_token_id)) * len(schedule)).backward()
    whole = adapter_grads(model)
    gap = max(float((steps[n] - whole[n]).abs().max() / whole[n].abs().max()) for n in whole)
    assert gap < 1e-4 if norm == "tokens" else gap > 5e-3, gap


@pytest.mark.parametrize("norm", ["tokens", "batch"])
def test_micro_batches_give_the_whole_steps_loss_and_gradients(rows_and_model, norm):
    """train.micro_batch_tokens: a step split into micro-batches (unequal label tokens) computes the loss and the
    gradients of the whole step; only the memory one pass holds changes."""
    rows, model, tok = rows_and_model
    longest = max(len(r["input_ids"]) for r in rows)
    groups = batches.micro_batches(rows, 3 * longest, False)
    assert len(groups) >= 4 and sum(map(len, groups)) == len(rows)
    assert all(len(g) * max(len(r["input_ids"]) for r in g) <= 3 * longest for g in groups)
    assert [r["id"] for g in groups for r in g] == [r["id"] for r in rows]  # the step's rows, in order, once each
    schedule = [list(range(len(rows)))]
    results = []
    for micro in (None, 3 * longest):
        model.zero_grad(set_to_none=True)
        value, real, computed = loss_mod.step_backward(step_run(model, tok, rows, schedule, norm, micro), rows)
        results.append((value, real, computed, adapter_grads(model)))
    (v1, r1, c1, g1), (v2, r2, c2, g2) = results
    assert abs(v1 - v2) < 1e-5 and r1 == r2 and c2 < c1  # micro-batches pad less (each to its own longest)
    assert all(torch.allclose(g1[n], g2[n], atol=1e-6, rtol=1e-4) for n in g1)


def test_neftune_noise_only_while_training_and_within_its_bound(rows_and_model):
    rows, model, tok = rows_and_model
    emb = model.get_input_embeddings()
    ids = batches.collate(rows[:4], tok.pad_token_id)["input_ids"]
    handle = options.add_neftune(model, 5.0)
    try:
        with torch.no_grad():
            clean = torch.nn.functional.embedding(ids, emb.weight)
            emb.train()
            noisy = emb(ids)
            emb.eval()
            quiet = emb(ids)
    finally:
        handle.remove()
    bound = 5.0 / (ids.shape[1] * clean.shape[-1]) ** 0.5
    assert torch.equal(quiet, clean)
    assert 0.5 * bound < float((noisy - clean).abs().max()) <= bound * (1 + 1e-6)


def test_neftune_trains_deterministically_and_differently(prepared, tmp_path):  # noqa: F811
    _, p = prepared
    base = {"steps": 4, "checkpoint_every": 4}
    plain = train(p, tmp_path / "plain", base)
    a = train(p, tmp_path / "a", {**base, "neftune_alpha": 5.0})
    b = train(p, tmp_path / "b", {**base, "neftune_alpha": 5.0})
    assert curve(tmp_path / "a") == curve(tmp_path / "b")
    assert curve(tmp_path / "a") != curve(tmp_path / "plain")
    assert a["final_loss"] == b["final_loss"] != plain["final_loss"]
