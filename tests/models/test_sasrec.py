import pytest
import torch
from modelkit import tiny_model, tiny_vocab

from streamrec.errors import ModelError
from streamrec.models.checkpoint import load_checkpoint, save_checkpoint
from streamrec.models.losses import sequence_loss
from streamrec.models.sasrec import causal_padding_mask


def _batch() -> torch.Tensor:
    return torch.tensor([[0, 0, 0, 3, 5, 7, 9, 2], [1, 2, 3, 4, 5, 6, 7, 8]])  # [2, 8]


@pytest.mark.parametrize("kind", ["sasrec", "gru4rec"])
def test_shapes_and_padding(kind: str) -> None:
    model = tiny_model(kind).eval()
    hidden = model(_batch())
    assert hidden.shape == (2, 8, 16)
    assert torch.all(hidden[0, :3] == 0)  # padded positions carry nothing
    assert model.scores(hidden).shape == (2, 8, 21)


@pytest.mark.parametrize("kind", ["sasrec", "gru4rec"])
def test_no_future_leakage(kind: str) -> None:
    model = tiny_model(kind).eval()
    item_seq = _batch()
    changed = item_seq.clone()
    changed[:, 5] = torch.tensor([11, 12])  # change position 5 only
    before, after = model(item_seq), model(changed)
    assert torch.allclose(before[:, :5], after[:, :5], atol=1e-6)  # the past is untouched
    assert not torch.allclose(before[:, 5:], after[:, 5:])  # the present and future see it


def test_mask_is_causal_and_hides_padding() -> None:
    allowed = causal_padding_mask(torch.tensor([[0, 4, 5]]))[0]
    assert allowed.tolist() == [[True, False, False], [False, True, False], [False, True, True]]


@pytest.mark.parametrize("kind", ["sasrec", "gru4rec"])
def test_padding_amount_does_not_change_result(kind: str) -> None:
    model = tiny_model(kind).eval()
    short = torch.tensor([[4, 5, 6]])
    padded = torch.tensor([[0, 0, 0, 0, 4, 5, 6]])
    assert torch.allclose(model.last_hidden(short), model.last_hidden(padded), atol=1e-5)


def test_get_predictions_masks_seen_and_padding() -> None:
    model = tiny_model("sasrec")
    item_seq = torch.tensor([[1, 2, 3]])
    top_items, top_scores = model.get_predictions(item_seq, k=20, seen=torch.tensor([[1, 2, 3]]))
    assert top_items.shape == (1, 20)
    finite = top_items[torch.isfinite(top_scores)].tolist()
    assert len(finite) == 17 and not {0, 1, 2, 3} & set(finite)
    assert model.training  # mode restored


@pytest.mark.parametrize("loss", ["ce", "gbce", "bpr-max"])
def test_losses_are_finite_and_train(loss: str) -> None:
    model = tiny_model("sasrec", loss=loss, n_negatives=8)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    inputs, targets = _batch()[:, :-1], _batch()[:, 1:]
    first = sequence_loss(model, inputs, targets)
    for _ in range(20):
        optimiser.zero_grad()
        sequence_loss(model, inputs, targets).backward()
        optimiser.step()
    last = sequence_loss(model, inputs, targets)
    assert torch.isfinite(first) and last < first


@pytest.mark.parametrize("kind", ["sasrec", "gru4rec"])
def test_grow_items_keeps_old_rows(kind: str) -> None:
    model = tiny_model(kind, tie_embeddings=False)
    old_input = model.item_embedding.weight.detach().clone()
    model.grow_items(3)
    grown = model.item_embedding.weight.detach()
    assert grown.shape == (24, 16) and model.config.n_items == 24
    assert torch.equal(grown[:21], old_input)
    assert torch.allclose(grown[21], old_input[1:].mean(dim=0))
    assert model.output_weight().shape == (24, 16) and model.item_popularity.shape == (24,)
    assert model.get_predictions(torch.tensor([[22, 23]]), k=5)[0].shape == (1, 5)


@pytest.mark.parametrize("kind", ["sasrec", "gru4rec"])
def test_safetensors_round_trip(tmp_path, kind: str) -> None:
    model = tiny_model(kind).eval()
    vocab = tiny_vocab()
    save_checkpoint(tmp_path, model, vocab, {"dataset": "toy", "metrics": {"ndcg@10": 0.5}})
    loaded = load_checkpoint(tmp_path)
    assert loaded.vocab == vocab and loaded.meta["metrics"] == {"ndcg@10": 0.5}
    assert loaded.meta["vocab_hash"] == vocab.content_hash()
    item_seq = _batch()
    assert torch.allclose(model(item_seq), loaded.model(item_seq))
    assert not list(tmp_path.glob("*.pt")) and not list(tmp_path.glob(".*"))


def test_checkpoint_rejects_wrong_vocab(tmp_path) -> None:
    model = tiny_model("sasrec")
    with pytest.raises(ModelError):
        save_checkpoint(tmp_path, model, tiny_vocab(5), {})


def test_explanations_point_into_history() -> None:
    model = tiny_model("sasrec").eval()
    item_seq = torch.tensor([[0, 0, 3, 5, 7]])
    positions = model.explain(item_seq, torch.tensor([[1, 2]]), top_n=4)
    assert positions.shape == (1, 2, 4)
    assert set(positions[0, :, :3].flatten().tolist()) <= {2, 3, 4}
    assert positions[0, :, 3].tolist() == [-1, -1]  # only three real items


def test_invalid_config() -> None:
    with pytest.raises(ModelError, match="divisible"):
        tiny_model("sasrec", hidden=10, n_heads=3)


@pytest.mark.parametrize("kind", ["sasrec", "gru4rec"])
def test_serving_fast_path_matches_training_path(kind: str) -> None:
    model = tiny_model(kind).eval()
    item_seq = _batch()
    assert torch.allclose(model.last_hidden(item_seq), model(item_seq)[:, -1], atol=1e-5)


@pytest.mark.parametrize(
    ("positions", "expected"),
    [
        (
            "recent",
            [8, 9, 10, 11],
        ),  # shared by all rows; the newest item is always max_len - 1 (12 - 1)
        ("absolute", [[0, 0, 0, 1], [0, 1, 2, 3]]),  # from each row's oldest real item
    ],
)
def test_position_numbering(positions: str, expected: list[list[int]]) -> None:
    model = tiny_model("sasrec", positions=positions).eval()
    seen: list[torch.Tensor] = []
    model.position_embedding.register_forward_hook(lambda _m, args, _out: seen.append(args[0]))
    model(torch.tensor([[0, 0, 3, 4], [1, 2, 3, 4]]))
    assert seen[0].tolist() == expected


def test_absolute_positions_keep_padding_causality_and_fast_path() -> None:
    model = tiny_model("sasrec", positions="absolute").eval()
    short, padded = torch.tensor([[4, 5, 6]]), torch.tensor([[0, 0, 0, 0, 4, 5, 6]])
    assert torch.allclose(model.last_hidden(short), model.last_hidden(padded), atol=1e-5)
    item_seq = _batch()
    changed = item_seq.clone()
    changed[:, 5] = torch.tensor([11, 12])
    before, after = model(item_seq), model(changed)
    assert torch.allclose(before[:, :5], after[:, :5], atol=1e-6)
    assert not torch.allclose(before[:, 5:], after[:, 5:])
    assert torch.allclose(model.last_hidden(item_seq), before[:, -1], atol=1e-5)


def test_unknown_positions_are_refused() -> None:
    with pytest.raises(ModelError, match="positions"):
        tiny_model("sasrec", positions="middle")
