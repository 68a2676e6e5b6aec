"""Token CTC over the frozen LLM's embedding table (freeze_omni.train.token_ctc)."""

import torch

from freeze_omni.train.token_ctc import TokenCTC


def _table(v=50, h=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(v, h, generator=g) * 0.5).requires_grad_(False)


def _spoken(ctc: TokenCTC, ids: list[int], gap: int = 2) -> torch.Tensor:
    """Adapter outputs that are exactly the tokens' embeddings, each followed by ``gap`` blanks."""
    rows = []
    for i in ids:
        rows.append(ctc.table[i])
        rows += [ctc.blank.detach()] * gap
    return torch.stack(rows)


def test_embeddings_of_the_transcript_score_far_better_than_noise():
    torch.manual_seed(0)
    ctc = TokenCTC(_table(), negatives=8, init_scale=1.0)
    tgt = [[3, 7, 7, 11], [20, 4]]
    a = [_spoken(ctc, t) for t in tgt]
    lens = torch.tensor([x.shape[0] for x in a])
    audio = torch.nn.utils.rnn.pad_sequence(a, batch_first=True)
    good, acc = ctc(audio, lens, tgt)
    noise = torch.randn_like(audio) * audio.std()
    bad, bad_acc = ctc(noise, lens, tgt)
    assert float(acc) == 1.0 and float(bad_acc) < 0.5
    assert float(good.detach()) < 0.1 * float(bad.detach())


def test_gradients_reach_the_adapter_outputs_and_blank_not_the_table():
    ctc = TokenCTC(_table(), negatives=4)
    audio = torch.randn(2, 9, 16, requires_grad=True)
    loss, _ = ctc(audio, torch.tensor([9, 6]), [[1, 2, 3], []])  # the second utterance has no transcript
    loss.backward()
    assert audio.grad[0].abs().sum() > 0 and audio.grad[1].abs().sum() == 0
    assert ctc.blank.grad.abs().sum() > 0 and ctc.log_scale.grad is not None
    assert ctc.table.grad is None and not any(p is ctc.table for p in ctc.parameters())


def test_no_transcript_gives_a_zero_loss():
    ctc = TokenCTC(_table())
    loss, acc = ctc(torch.randn(1, 5, 16), torch.tensor([5]), [[]])
    assert float(loss) == 0.0 and float(acc) == 0.0


def test_training_the_outputs_makes_them_read_as_the_transcript():
    torch.manual_seed(1)
    ctc = TokenCTC(_table(), negatives=0)
    audio = torch.nn.Parameter(torch.randn(1, 12, 16) * 0.5)
    opt = torch.optim.Adam([audio, *ctc.parameters()], lr=0.05)
    tgt = [[5, 9, 13, 2]]
    first = None
    for _ in range(150):
        loss, acc = ctc(audio, torch.tensor([12]), tgt)
        first = float(loss) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss) < 0.2 * first and float(acc) == 1.0
