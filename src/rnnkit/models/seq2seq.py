"""`Seq2Seq`: an attentional encoder-decoder (Luong et al. 2015) with greedy and beam decoding.

    source (B, S) -> TextEncoder (bi)RNN -> keys k_1..k_S (B, S, D*H), final states
    s_0 = tanh(W_b [h_fwd; h_bwd])                                      bridge to the decoder
    for each target step t (decoder cell: rnnkit LSTMCell / GRUCell / ElmanCell):
        x_t   = [emb(y_{t-1}); h~_{t-1}]      (input feeding; just emb(y_{t-1}) without it)
        s_t   = cell(x_t, s_{t-1})
        c_t, a_t = attention(s_t, k, lengths)                           rnnkit.models.attention
        h~_t  = tanh(W_c [c_t; s_t])
        p(y_t | y_<t, x) = softmax(W_o h~_t)

Target ids: 0 is padding, 1 starts (BOS) and 2 ends (EOS) a sequence. A `Batch` holds
inputs = source ids (B, S), lengths = source lengths (B,), targets = target ids (B, T) ending
in EOS, padded with 0, without BOS. In training, `loss` feeds the gold previous token with
probability `teacher_forcing` and the model's own argmax otherwise (scheduled sampling); set the
attribute `model.teacher_forcing` between epochs to follow a schedule.

Decoding: `greedy` and `beam_search` return `Decoded(tokens, log_probs, attention)`: ids
(B, L) including EOS then 0s, the summed log-probability of those ids, and the attention
weights (B, L, S) for a heat-map. Beam search ranks finished hypotheses by
log_prob / lp(len) with GNMT's length penalty lp(len) = ((5 + len) / 6) ** alpha (Wu et al.
2016), len counting EOS; alpha = 0 ranks by log-probability alone.

What lives elsewhere: tokenizers, data, BLEU and the command line (rnnkit.tasks), training
(rnnkit.train).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit.cells import ElmanCell, GRUCell, LSTMCell, State
from rnnkit.data.batch import Batch
from rnnkit.models._checks import check_choice
from rnnkit.models.attention import ATTENTIONS, make_attention
from rnnkit.models.encoder import CELLS, TextEncoder

PAD, BOS, EOS = 0, 1, 2  # special target ids
DECODER_CELLS: dict[str, type[nn.Module]] = {"lstm": LSTMCell, "gru": GRUCell, "rnn": ElmanCell}


@dataclass(frozen=True)
class Seq2SeqConfig:
    """Everything that defines a Seq2Seq's architecture (saved in the run's config.json)."""

    source_vocab_size: int  # V_src, source ids 0 .. V_src-1 (0 is padding)
    target_vocab_size: int  # V_tgt, target ids; 0 padding, 1 BOS, 2 EOS
    embedding_dim: int = 128  # E, features per token embedding (source and target)
    hidden_size: int = 128  # H, encoder state per direction and decoder state
    num_layers: int = 1  # stacked encoder layers
    cell: str = "lstm"  # "lstm", "gru" or "rnn", for the encoder and the decoder
    bidirectional: bool = True  # encoder reads both ways (D = 2)
    attention: str = "additive"  # "additive" (Bahdanau) or "multiplicative" (Luong general)
    input_feeding: bool = True  # feed h~_{t-1} into the decoder with the previous token
    dropout: float = 0.1  # on embeddings, encoder outputs and before the output layer
    teacher_forcing: float = 1.0  # training: probability of feeding the gold previous token

    def __post_init__(self) -> None:
        if self.target_vocab_size <= EOS + 1:
            raise ValueError(f"target_vocab_size must be > 3, got {self.target_vocab_size}")
        check_choice("cell", self.cell, CELLS)
        check_choice("attention", self.attention, ATTENTIONS)
        if not 0.0 <= self.teacher_forcing <= 1.0:
            raise ValueError(f"teacher_forcing must be in [0, 1], got {self.teacher_forcing}")


class Memory(NamedTuple):
    """What the decoder attends to: keys (B, S, D*H) and source lengths (B,) or None."""

    keys: Tensor
    lengths: Tensor | None


class Decoded(NamedTuple):
    """A decoding: tokens (B, L) with EOS then 0s, log_probs (B,), attention (B, L, S)."""

    tokens: Tensor
    log_probs: Tensor
    attention: Tensor


DecoderState = tuple[State, Tensor]  # (cell state, h~ of the previous step (B, H))


def _select(state: State | tuple, rows: Tensor) -> State | tuple:
    """Rows `rows` of every tensor in a (nested) state, along dimension 0."""
    if isinstance(state, Tensor):
        return state[rows]
    return tuple(_select(part, rows) for part in state)


def next_log_probs(logits: Tensor) -> Tensor:
    """log p(y_t) (B, V) for decoding: -inf at PAD and BOS, which a decoder never emits."""
    log_probs = logits.log_softmax(dim=-1)
    log_probs[:, [PAD, BOS]] = float("-inf")
    return log_probs


def gnmt_length_penalty(lengths: Tensor, alpha: float) -> Tensor:
    """GNMT's lp(len) = ((5 + len) / 6) ** alpha; hypotheses rank by log_prob / lp(len)."""
    return ((5.0 + lengths.float()) / 6.0) ** alpha


class Seq2Seq(nn.Module):
    """Attentional encoder-decoder over token ids: `Seq2Seq(Seq2SeqConfig(...))`.

    forward(source (B, S), lengths (B,) or None, targets (B, T)) -> logits (B, T, V_tgt). The
    training contract: loss(batch) (mean cross-entropy over non-padding targets) and
    predict(batch) (greedy ids (B, L)); decoding: greedy, beam_search; scoring:
    sequence_log_prob.
    """

    def __init__(self, config: Seq2SeqConfig) -> None:
        super().__init__()
        self.config = config
        self.teacher_forcing = config.teacher_forcing  # may follow a schedule during training
        hidden = config.hidden_size
        self.encoder = TextEncoder(
            config.source_vocab_size,
            config.embedding_dim,
            hidden,
            num_layers=config.num_layers,
            cell=config.cell,
            bidirectional=config.bidirectional,
            dropout=config.dropout,
        )
        keys = self.encoder.output_size  # D*H
        self.bridge = nn.Linear(keys, hidden)  # W_b
        self.target_embedding = nn.Embedding(config.target_vocab_size, config.embedding_dim, PAD)
        feed = hidden if config.input_feeding else 0
        self.decoder = DECODER_CELLS[config.cell](config.embedding_dim + feed, hidden)
        self.attention = make_attention(config.attention, hidden, keys)
        self.combine = nn.Linear(keys + hidden, hidden, bias=False)  # W_c
        self.output = nn.Linear(hidden, config.target_vocab_size)  # W_o
        self.dropout = nn.Dropout(config.dropout)

    # --- the two halves ---------------------------------------------------------------------

    def encode(self, source: Tensor, lengths: Tensor | None) -> tuple[Memory, DecoderState]:
        """Source ids (B, S) -> (memory to attend to, the decoder's first state)."""
        keys, final = self.encoder(source, lengths)  # (B, S, D*H)
        h_n = final[0] if isinstance(final, tuple) else final  # (D*layers, B, H)
        directions = 2 if self.config.bidirectional else 1
        last = h_n[-directions:].transpose(0, 1).reshape(source.shape[0], -1)  # (B, D*H)
        s = torch.tanh(self.bridge(last))  # (B, H)
        cell_state = (s, torch.zeros_like(s)) if self.config.cell == "lstm" else s
        return Memory(keys, lengths), (cell_state, torch.zeros_like(s))

    def decode_step(
        self, token: Tensor, state: DecoderState, memory: Memory
    ) -> tuple[Tensor, DecoderState, Tensor]:
        """One target step: previous ids (B,) -> (logits (B, V_tgt), new state, weights (B, S))."""
        cell_state, attentional = state
        x = self.dropout(self.target_embedding(token))  # (B, E)
        if self.config.input_feeding:
            x = torch.cat([x, attentional], dim=-1)  # (B, E + H)
        cell_state = self.decoder(x, cell_state)
        s = cell_state[0] if isinstance(cell_state, tuple) else cell_state  # (B, H)
        context, weights = self.attention(s, memory.keys, memory.lengths)  # (B, D*H), (B, S)
        attentional = torch.tanh(self.combine(torch.cat([context, s], dim=-1)))  # h~ (B, H)
        logits = self.output(self.dropout(attentional))  # (B, V_tgt)
        return logits, (cell_state, attentional), weights

    # --- training and scoring ---------------------------------------------------------------

    def unroll(
        self, source: Tensor, lengths: Tensor | None, targets: Tensor, teacher_forcing: float
    ) -> tuple[Tensor, Tensor]:
        """Run the decoder along targets (B, T): (logits (B, T, V_tgt), attention (B, T, S)).

        Each step's input is the gold previous token with probability `teacher_forcing`, per
        sequence and step, else the previous step's argmax (detached).
        """
        memory, state = self.encode(source, lengths)
        token = targets.new_full((targets.shape[0],), BOS)  # (B,)
        logits, weights = [], []
        for t in range(targets.shape[1]):
            step_logits, state, step_weights = self.decode_step(token, state, memory)
            logits.append(step_logits)
            weights.append(step_weights)
            token = targets[:, t]
            if teacher_forcing < 1.0:
                own = torch.rand(token.shape, device=token.device) >= teacher_forcing
                token = torch.where(own, step_logits.detach().argmax(dim=-1), token)
        return torch.stack(logits, dim=1), torch.stack(weights, dim=1)

    def forward(self, source: Tensor, lengths: Tensor | None, targets: Tensor) -> Tensor:
        """Logits (B, T, V_tgt); scheduled sampling (`teacher_forcing` < 1) in training only."""
        ratio = self.teacher_forcing if self.training else 1.0
        return self.unroll(source, lengths, targets, ratio)[0]

    def loss(self, batch: Batch) -> Tensor:
        """Mean cross-entropy over the non-padding target tokens (EOS included)."""
        logits = self(batch.inputs, batch.lengths, batch.targets)  # (B, T, V)
        return F.cross_entropy(logits.flatten(0, 1), batch.targets.flatten(), ignore_index=PAD)

    def loss_weight(self, batch: Batch) -> int:
        """The target tokens `loss` averages over (`rnnkit.train.evaluate` weights by them)."""
        return int((batch.targets != PAD).sum())

    def sequence_log_prob(self, source: Tensor, lengths: Tensor | None, targets: Tensor) -> Tensor:
        """log p(targets | source) (B,), teacher-forced, summed over the non-padding ids."""
        logits = self.unroll(source, lengths, targets, teacher_forcing=1.0)[0]
        log_probs = logits.log_softmax(dim=-1).gather(-1, targets[..., None]).squeeze(-1)
        return (log_probs * (targets != PAD)).sum(dim=1)  # (B,)

    def predict(self, batch: Batch) -> Tensor:
        """Greedy target ids (B, L): each ends in EOS (unless cut at max_len), then 0s."""
        return self.greedy(batch.inputs, batch.lengths).tokens

    # --- decoding ---------------------------------------------------------------------------

    @torch.no_grad()
    def greedy(
        self, source: Tensor, lengths: Tensor | None = None, max_len: int | None = None
    ) -> Decoded:
        """The most probable id at each step, until every sequence has emitted EOS or max_len
        steps (default 2 S + 10)."""
        max_len = max_len or 2 * source.shape[1] + 10
        memory, state = self.encode(source, lengths)
        token = source.new_full((source.shape[0],), BOS)  # (B,)
        done = torch.zeros_like(token, dtype=torch.bool)  # (B,) emitted EOS already
        total = torch.zeros(token.shape, device=source.device)  # (B,)
        tokens, weights = [], []
        for _ in range(max_len):
            logits, state, step_weights = self.decode_step(token, state, memory)
            log_probs = next_log_probs(logits)  # (B, V)
            token = log_probs.argmax(dim=-1).masked_fill(done, PAD)
            total += log_probs.gather(1, token[:, None]).squeeze(1).masked_fill(done, 0.0)
            tokens.append(token)
            weights.append(step_weights.masked_fill(done[:, None], 0.0))
            done = done | (token == EOS)
            if done.all():
                break
        return Decoded(torch.stack(tokens, dim=1), total, torch.stack(weights, dim=1))

    @torch.no_grad()
    def beam_search(
        self,
        source: Tensor,
        lengths: Tensor | None = None,
        beam: int = 5,
        max_len: int | None = None,
        length_penalty: float = 0.0,
    ) -> Decoded:
        """Keep the `beam` best prefixes by summed log-probability each step; a hypothesis that
        has emitted EOS keeps its slot and score. At the end (all finished or max_len steps,
        default 2 S + 10) return the finished hypothesis with the best log_prob / lp(len), lp
        the GNMT length penalty ((5 + len) / 6) ** length_penalty (an unfinished one only when
        none in the beam has finished). Width 1 is greedy decoding."""
        if not isinstance(beam, int) or beam < 1:
            raise ValueError(f"beam must be an int >= 1, got {beam!r}")
        max_len = max_len or 2 * source.shape[1] + 10
        batch, vocab = source.shape[0], self.config.target_vocab_size
        if beam > vocab:
            raise ValueError(f"beam must be <= target_vocab_size {vocab}, got {beam}")
        memory, state = self.encode(source, lengths)
        rows = torch.arange(batch, device=source.device).repeat_interleave(beam)  # (B*K,)
        memory = Memory(memory.keys[rows], None if lengths is None else memory.lengths[rows])
        state = _select(state, rows)
        scores = torch.full((batch, beam), float("-inf"), device=source.device)
        scores[:, 0] = 0.0  # (B, K): the K copies of one start differ only in score
        token = source.new_full((batch * beam,), BOS)  # (B*K,)
        done = torch.zeros_like(token, dtype=torch.bool)  # (B*K,)
        sizes = torch.zeros_like(token)  # (B*K,) ids emitted up to and including EOS
        history = token.new_zeros(batch * beam, 0)  # (B*K, t)
        attention = memory.keys.new_zeros(batch * beam, 0, memory.keys.shape[1])  # (B*K, t, S)
        only_pad = torch.full((vocab,), float("-inf"), device=source.device)
        only_pad[PAD] = 0.0  # a finished hypothesis continues with padding, at no cost
        for _ in range(max_len):
            logits, state, weights = self.decode_step(token, state, memory)
            log_probs = torch.where(done[:, None], only_pad, next_log_probs(logits))
            candidates = (scores.view(-1, 1) + log_probs).view(batch, beam * vocab)
            scores, flat = candidates.topk(beam, dim=1)  # (B, K)
            parent = torch.arange(batch, device=source.device)[:, None] * beam + flat // vocab
            parent = parent.view(-1)  # (B*K,) the row each new hypothesis extends
            token = (flat % vocab).view(-1)  # (B*K,)
            state, done, sizes = _select(state, parent), done[parent], sizes[parent]
            history = torch.cat([history[parent], token[:, None]], dim=1)
            step_weights = weights[parent].masked_fill(done[:, None], 0.0)  # (B*K, S)
            attention = torch.cat([attention[parent], step_weights[:, None]], dim=1)
            sizes = sizes + (~done).long()
            done = done | (token == EOS)
            if done.all():
                break
        ranked = scores / gnmt_length_penalty(sizes.view(batch, beam), length_penalty)
        finished = done.view(batch, beam)  # a cut-off one lacks EOS's log-prob: not its peer
        ranked = torch.where(finished.any(dim=1, keepdim=True) & ~finished, -torch.inf, ranked)
        best = torch.arange(batch, device=source.device) * beam + ranked.argmax(dim=1)  # (B,)
        return Decoded(history[best], scores.view(-1)[best], attention[best])
