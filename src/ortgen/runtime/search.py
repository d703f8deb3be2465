"""Greedy search, sampling and beam search (with or without sampling) for ONE request, as
transformers does them for that prompt alone.

Each search is a small state machine that the scheduler (:mod:`ortgen.runtime.scheduler`) feeds
with the logits of its request's rows, whatever else ran in the same decoder call:

    first(logits [V])          the logits after the prompt's last token: choose the first tokens
    step(logits [width, V])    the logits after each sequence's latest token: choose the next ones
    first_best / step_best     the same from only the rows' largest logits (BestTokens), for the
                               searches :func:`best_k` says can do without the whole rows
    feed()                     the tokens (and, for beam search, each one's parent) to run next
    done / hypotheses()        finished? the results, best first

The loops port transformers' ``_sample`` and ``_beam_search`` (5.x, the vectorised beam
search) to numpy, over one prompt:

- the token history a processor sees is transformers' own for a single prompt: the prompt, then
  the new tokens (no padding: a request's result depends on itself alone);
- beam search: log-softmax, processors, beam scores added, the top ``max(2, 1 + n_eos) *
  num_beams`` continuations (sampled without replacement when sampling), finished hypotheses
  scored by ``sum_logprobs / generated_length ** length_penalty`` (EOS counted), early stopping
  True / False / "never" with transformers' heuristics.

Sampling uses numpy's PCG64 (``seed``), one generator per request: the same seed gives the same
tokens whatever runs beside it; not torch's stream.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from ortgen.runtime.processors import NEG_INF, LogitsProcessor, MinLength, MinNewTokens, apply, log_softmax

if TYPE_CHECKING:
    from ortgen.runtime.grammar import GrammarState

NEG = np.float32(-1.0e9)


@dataclass(frozen=True)
class BestTokens:
    """Rows' ``k`` largest logits, largest first (ties: lower token id first), their token ids and
    each row's log-sum-exp (so that log-probability = logit - logsumexp): what greedy and beam
    search need of a row when no logits processor must see all of it (decoder_engine.onnx's
    ``best_*`` outputs)."""

    logits: np.ndarray  # float32 [rows, k]
    ids: np.ndarray  # int64 [rows, k]
    logsumexp: np.ndarray  # float32 [rows, 1]
    vocab_size: int

    def rows(self, rows: slice) -> "BestTokens":
        return BestTokens(self.logits[rows], self.ids[rows], self.logsumexp[rows], self.vocab_size)

    def repeated(self, n: int) -> "BestTokens":
        """Row 0, ``n`` times (a prompt's one row of logits, for each of its sequences)."""
        return BestTokens(np.repeat(self.logits[:1], n, axis=0), np.repeat(self.ids[:1], n, axis=0),
                          np.repeat(self.logsumexp[:1], n, axis=0), self.vocab_size)


_EOS_BANS = (MinLength, MinNewTokens)


def best_k(spec: "SearchSpec") -> int | None:
    """How many of each row's largest logits the search needs per step, or None when it needs the
    whole rows: greedy and beam search can choose from a row's best tokens alone when nothing else
    looks at the row (no sampling, no log-probabilities, no logits processor but the EOS bans of
    min_length / min_new_tokens, whose banned ids the choice then skips: ``k`` leaves room for them)."""
    if spec.do_sample or spec.logprobs is not None or not all(isinstance(p, _EOS_BANS) for p in spec.processors):
        return None
    chosen = max(2, 1 + len(spec.eos_token_ids)) * spec.num_beams if spec.num_beams > 1 else 1
    return chosen + (len(spec.eos_token_ids) if spec.processors else 0)


def _ban_eos(spec: "SearchSpec", length: int, best: BestTokens, scores: np.ndarray) -> np.ndarray:
    """``scores`` (aligned with ``best.ids``) with the EOS candidates at -inf when a ban holds at ``length``."""
    if any(p.bans_eos(length) for p in spec.processors):  # type: ignore[attr-defined] - best_k admits only bans
        scores = np.where(np.isin(best.ids, spec.eos_token_ids), NEG_INF, scores)
    return scores


@dataclass(frozen=True)
class SearchSpec:
    """Everything a search needs, resolved for one request."""

    max_new_tokens: int
    num_beams: int
    num_return_sequences: int
    do_sample: bool
    length_penalty: float
    early_stopping: bool | str
    eos_token_ids: list[int]
    pad_token_id: int
    processors: list[LogitsProcessor]
    stop_strings: Callable[[Sequence[Sequence[int]]], np.ndarray] | None = None
    seed: int | None = None
    logprobs: int | None = None  # record the chosen token's log-probability and the top N alternatives
    grammar: "GrammarState | None" = None  # structured output: the matchers its GrammarMask processor reads

    @property
    def width(self) -> int:
        return self.num_beams if self.num_beams > 1 else self.num_return_sequences


@dataclass
class TokenLogprob:
    """One generated token's log-probability in the processed distribution it was chosen from, and
    the ``top`` most likely alternatives there (token id, log-probability), best first."""

    token: int
    logprob: float
    top: list[tuple[int, float]] = field(default_factory=list)


@dataclass
class Hypothesis:
    """Generated tokens (EOS included when the model produced it) and how the sequence ended."""

    tokens: list[int]
    stop_reason: str  # "eos", "stop_string" or "length"
    score: float | None = None
    logprobs: list[TokenLogprob] | None = None


def _stop_reason(tokens: Sequence[int], eos: Sequence[int], stopped_by_string: bool) -> str:
    if tokens and tokens[-1] in eos:
        return "eos"
    return "stop_string" if stopped_by_string else "length"


def _gumbel(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return -np.log(-np.log(rng.random(shape, dtype=np.float64).clip(1e-300, 1.0))).astype(np.float32)


def logprob_records(distribution: np.ndarray, chosen: np.ndarray, top: int) -> list[TokenLogprob]:
    """Per row of ``distribution`` (log-probabilities [rows, V]): the chosen token's and the top alternatives'."""
    records = []
    for row, token in enumerate(chosen):
        values = distribution[row]
        best: list[tuple[int, float]] = []
        if top:
            k = min(top, values.shape[0])
            ids = np.argpartition(-values, k - 1)[:k]
            ids = ids[np.lexsort((ids, -values[ids]))]
            best = [(int(i), float(values[i])) for i in ids]
        records.append(TokenLogprob(int(token), float(values[token]), best))
    return records


class SampleSearch:
    """Greedy search (``do_sample=False``) or multinomial sampling of ``num_return_sequences``
    sequences of one prompt."""

    def __init__(self, prompt: Sequence[int], spec: SearchSpec) -> None:
        self.spec = spec
        self.width = n = spec.num_return_sequences
        self.prompt_length = P = len(prompt)
        self.history = np.full((n, P + spec.max_new_tokens), spec.pad_token_id, dtype=np.int64)
        self.history[:, :P] = prompt
        self.cur = P
        self.eos = np.array(spec.eos_token_ids, dtype=np.int64)
        self.rng = np.random.default_rng(spec.seed)
        self.unfinished = np.ones(n, dtype=bool)
        self.ended_at = np.full(n, spec.max_new_tokens, dtype=np.int64)  # generated tokens kept per sequence
        self.reasons = ["length"] * n
        self.logprobs: list[list[TokenLogprob]] = [[] for _ in range(n)]
        self.done = False
        self._next = np.zeros(n, dtype=np.int64)

    def first(self, logits: np.ndarray) -> None:
        self.step(np.repeat(logits[None, :], self.width, axis=0))

    def step(self, logits: np.ndarray) -> None:
        spec = self.spec
        scores = apply(spec.processors, self.history[:, :self.cur], logits.astype(np.float32, copy=True))
        if spec.do_sample:
            noisy = np.where(np.isfinite(scores), scores + _gumbel(self.rng, scores.shape), -np.inf)
            tokens = np.argmax(noisy, axis=-1)
        else:
            tokens = np.argmax(scores, axis=-1)
        if spec.logprobs is not None:
            for row, record in enumerate(logprob_records(log_softmax(scores), tokens, spec.logprobs)):
                if self.unfinished[row]:
                    self.logprobs[row].append(record)
        self._advance(tokens)

    def first_best(self, best: BestTokens) -> None:
        self.step_best(best.repeated(self.width))

    def step_best(self, best: BestTokens) -> None:
        """Greedy from each row's best logits: the largest after the EOS bans, lowest id on ties, as
        ``argmax`` over the whole row."""
        scores = _ban_eos(self.spec, self.cur, best, best.logits)
        self._advance(best.ids[np.arange(self.width), np.argmax(scores, axis=-1)])

    def _advance(self, tokens: np.ndarray) -> None:
        spec, n = self.spec, self.width
        tokens = np.where(self.unfinished, tokens, spec.pad_token_id)
        self.history[:, self.cur] = tokens
        self.cur += 1
        P = self.prompt_length
        by_eos = np.isin(tokens, self.eos) & self.unfinished
        by_string = np.zeros(n, dtype=bool)
        if spec.stop_strings is not None:
            by_string = spec.stop_strings([self.history[r, P:self.cur] for r in range(n)]) & self.unfinished & ~by_eos
        newly = by_eos | by_string
        self.ended_at[newly] = self.cur - P
        for row in np.flatnonzero(by_eos):
            self.reasons[row] = "eos"
        for row in np.flatnonzero(by_string):
            self.reasons[row] = "stop_string"
        self.unfinished &= ~newly
        self._next = tokens
        self.done = not self.unfinished.any() or self.cur >= P + spec.max_new_tokens

    def feed(self) -> tuple[np.ndarray, np.ndarray | None]:
        return self._next, None

    def next_input_ids(self) -> np.ndarray:
        """The rows the processors see at the next step (prompt + generated tokens)."""
        return self.history[:, :self.cur]

    def generated(self, index: int) -> list[int]:
        """Sequence ``index``'s tokens so far (EOS included when it ended with one)."""
        P = self.prompt_length
        end = self.ended_at[index] if not self.unfinished[index] else self.cur - P
        return [int(t) for t in self.history[index, P:P + end]]

    def settled(self) -> list[list[int]]:
        """What each returned sequence has for sure: everything generated so far."""
        return [self.generated(i) for i in range(self.width)]

    def settled_logprobs(self, index: int, count: int) -> list[TokenLogprob]:
        return self.logprobs[index][:count]

    def hypotheses(self) -> list[Hypothesis]:
        return [Hypothesis(self.generated(i), self.reasons[i], None,
                           self.logprobs[i] if self.spec.logprobs is not None else None)
                for i in range(self.width)]


def _top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the indices and values of the k largest scores, best first (ties: lower index first).

    argpartition + a sort of k items: a full sort of num_beams * vocab scores per step cost
    more than the decoder step itself.
    """
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    values = np.take_along_axis(scores, part, axis=1)
    order = np.stack([np.lexsort((part[b], -values[b])) for b in range(scores.shape[0])])
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(values, order, axis=1)


class BeamSearch:
    """transformers' vectorised beam search (beam sampling when ``do_sample``) over one prompt.

    The arrays keep transformers' leading batch axis (of size 1) so the code reads like theirs.
    """

    def __init__(self, prompt: Sequence[int], spec: SearchSpec) -> None:
        self.spec = spec
        self.width = nb = spec.num_beams
        self.prompt_length = P = len(prompt)
        self.max_length = P + spec.max_new_tokens
        self.eos = np.array(spec.eos_token_ids, dtype=np.int64)
        self.K = max(2, 1 + len(spec.eos_token_ids)) * nb
        self.top_nb_mask = np.zeros(self.K, dtype=bool)
        self.top_nb_mask[:nb] = True
        self.rng = np.random.default_rng(spec.seed)
        self.running = np.full((1, nb, self.max_length), spec.pad_token_id, dtype=np.int64)
        self.running[:, :, :P] = prompt
        self.sequences = self.running.copy()
        self.lengths_fin = np.zeros((1, nb), dtype=np.int64)  # generated tokens of finished hypotheses
        self.by_string_fin = np.zeros((1, nb), dtype=bool)
        self.running_scores = np.zeros((1, nb), dtype=np.float32)
        self.running_scores[:, 1:] = NEG
        self.beam_scores = np.full((1, nb), NEG, dtype=np.float32)
        self.finished = np.zeros((1, nb), dtype=bool)
        self.heuristic_unsatisfied = np.ones((1, 1), dtype=bool)
        # per-token log-probabilities follow each hypothesis through reorders
        self.running_logprobs: list[list[TokenLogprob]] = [[] for _ in range(nb)]
        self.finished_logprobs: list[list[TokenLogprob]] = [[] for _ in range(nb)]
        self.cur = P
        self.parents = np.arange(nb)
        self.done = False

    def first(self, logits: np.ndarray) -> None:
        self.step(np.repeat(logits[None, :], self.width, axis=0))

    def step(self, logits: np.ndarray) -> None:
        spec, nb, K, cur = self.spec, self.width, self.K, self.cur
        V = logits.shape[-1]
        flat_running = self.running[:, :, :cur].reshape(nb, cur)
        log_probs = apply(spec.processors, flat_running, log_softmax(logits))
        accumulated = (log_probs.reshape(1, nb, V) + self.running_scores[:, :, None]).reshape(1, nb * V)
        if spec.do_sample:  # multinomial without replacement == Gumbel top-k
            keys = np.where(np.isfinite(accumulated), accumulated + _gumbel(self.rng, accumulated.shape), -np.inf)
            top = np.argpartition(-keys, K - 1, axis=1)[:, :K]
            top_scores = np.take_along_axis(accumulated, top, axis=1)
            order = np.argsort(-top_scores, axis=1, kind="stable")
            top, top_scores = np.take_along_axis(top, order, axis=1), np.take_along_axis(top_scores, order, axis=1)
        else:
            top, top_scores = _top_k(accumulated, K)
        self._advance(top, top_scores, V, log_probs)

    def first_best(self, best: BestTokens) -> None:
        self.step_best(best.repeated(self.width))

    def step_best(self, best: BestTokens) -> None:
        """The same step from each beam's best logits: the top K continuations of the whole
        ``num_beams x vocab`` lie among the beams' own top K (adding a beam's score keeps its
        order), chosen with the same order (score, then flat index) as :func:`_top_k`."""
        nb, K, V = self.width, self.K, best.vocab_size
        log_probs = _ban_eos(self.spec, self.cur, best, best.logits - best.logsumexp)
        accumulated = (log_probs + self.running_scores[0][:, None]).astype(np.float32, copy=False).ravel()
        flat = (np.arange(nb, dtype=np.int64)[:, None] * V + best.ids).ravel()
        order = np.lexsort((flat, -accumulated))[:K]
        self._advance(flat[order][None, :], accumulated[order][None, :], V, None)

    def _advance(self, top: np.ndarray, top_scores: np.ndarray, V: int,  # noqa: C901 - transformers' loop body
                 log_probs: np.ndarray | None) -> None:
        """The rest of one iteration of transformers' loop, from the top K continuations (flat
        indices into ``num_beams x V``, best first) and their accumulated scores."""
        spec, nb, K, cur, P = self.spec, self.width, self.K, self.cur, self.prompt_length
        source_beam, tokens = top // V, top % V
        candidates = np.take_along_axis(self.running, source_beam[:, :, None], axis=1)  # (1, K, max_length)
        candidates[:, :, cur] = tokens
        hits = np.isin(tokens, self.eos) | (cur + 1 >= self.max_length)
        string_hits = np.zeros_like(hits)
        if spec.stop_strings is not None:
            string_hits = spec.stop_strings([candidates[0, k, P:cur + 1] for k in range(K)]).reshape(1, K)
            hits |= string_hits
        candidate_logprobs: list[list[TokenLogprob]] = []
        if spec.logprobs is not None:
            assert log_probs is not None  # best_k sends requests for log-probabilities down step()
            records = logprob_records(log_probs, np.zeros(nb, dtype=np.int64), spec.logprobs)
            for k in range(K):
                beam, token = int(source_beam[0, k]), int(tokens[0, k])
                record = TokenLogprob(token, float(log_probs[beam, token]), records[beam].top)
                candidate_logprobs.append(self.running_logprobs[beam] + [record])

        # the best num_beams unfinished continuations keep running
        running_candidate_scores = top_scores + hits.astype(np.float32) * NEG
        keep = np.argsort(-running_candidate_scores, axis=1, kind="stable")[:, :nb]
        self.running = np.take_along_axis(candidates, keep[:, :, None], axis=1)
        self.running_scores = np.take_along_axis(running_candidate_scores, keep, axis=1)
        self.parents = np.take_along_axis(source_beam, keep, axis=1)[0]

        # finished hypotheses: only among the top num_beams candidates
        early = spec.early_stopping
        just_finished = hits & self.top_nb_mask[None, :]
        scores_fin = top_scores / np.float32((cur + 1 - P) ** spec.length_penalty)
        all_done = self.finished.all(axis=-1, keepdims=True) & (early is True)
        scores_fin = scores_fin + all_done.astype(np.float32) * NEG
        scores_fin = scores_fin + (~self.heuristic_unsatisfied).astype(np.float32) * NEG
        scores_fin = scores_fin + (~just_finished).astype(np.float32) * NEG
        merged_scores = np.concatenate([self.beam_scores, scores_fin], axis=1)
        best = np.argsort(-merged_scores, axis=1, kind="stable")[:, :nb]
        self.sequences = np.take_along_axis(np.concatenate([self.sequences, candidates], axis=1), best[:, :, None],
                                            axis=1)
        self.beam_scores = np.take_along_axis(merged_scores, best, axis=1)
        self.finished = np.take_along_axis(np.concatenate([self.finished, just_finished], axis=1), best, axis=1)
        new_lengths = np.full((1, K), cur + 1 - P, dtype=np.int64)
        self.lengths_fin = np.take_along_axis(np.concatenate([self.lengths_fin, new_lengths], axis=1), best, axis=1)
        self.by_string_fin = np.take_along_axis(np.concatenate([self.by_string_fin, string_hits], axis=1), best,
                                                axis=1)
        if spec.logprobs is not None:
            merged = self.finished_logprobs + candidate_logprobs
            self.finished_logprobs = [merged[i] for i in best[0]]
            self.running_logprobs = [candidate_logprobs[i] for i in keep[0]]

        self.cur = cur = cur + 1
        # early-stop heuristic, then whether anything can still change
        lp = spec.length_penalty
        best_length = (self.max_length - P) if (early == "never" and lp > 0.0) else (cur - P)
        best_possible = self.running_scores[:, :1] / np.float32(best_length ** lp)
        worst_finished = np.where(self.finished, self.beam_scores.min(axis=1, keepdims=True), NEG)
        self.heuristic_unsatisfied &= (best_possible > worst_finished).any(axis=-1, keepdims=True)
        improvement_possible = self.heuristic_unsatisfied.any()
        open_beam = not (self.finished.all() and early is True)
        valid_continuations = not hits.all()
        self.done = not (improvement_possible and open_beam and valid_continuations)

    def feed(self) -> tuple[np.ndarray, np.ndarray | None]:
        """The surviving beams continue their parents' paths with their new tokens."""
        return self.running[0, :, self.cur - 1], self.parents

    def next_input_ids(self) -> np.ndarray:
        """The rows the processors see at the next step (prompt + generated tokens)."""
        return self.running[0, :, :self.cur]

    def settled(self) -> list[list[int]]:
        """Per returned sequence, the tokens that every running beam and every finished hypothesis
        that may still be returned have in common: final whatever the search does next."""
        P = self.prompt_length
        candidates = [self.running[0, b, P:self.cur] for b in range(self.width)]
        candidates += [self.sequences[0, b, P:P + self.lengths_fin[0, b]]
                       for b in range(self.width) if self.beam_scores[0, b] > NEG / 2]
        length = min(len(c) for c in candidates)
        common = 0
        while common < length and all(c[common] == candidates[0][common] for c in candidates):
            common += 1
        prefix = [int(t) for t in candidates[0][:common]]
        return [prefix] * self.spec.num_return_sequences

    def settled_logprobs(self, index: int, count: int) -> list[TokenLogprob]:
        """The settled prefix is every hypothesis' own: any running beam's records cover it."""
        return self.running_logprobs[0][:count]

    def hypotheses(self) -> list[Hypothesis]:
        out = []
        P = self.prompt_length
        for r in range(self.spec.num_return_sequences):
            length = int(self.lengths_fin[0, r])
            tokens = [int(t) for t in self.sequences[0, r, P:P + length]]
            reason = _stop_reason(tokens, self.spec.eos_token_ids, bool(self.by_string_fin[0, r]))
            out.append(Hypothesis(tokens, reason, float(self.beam_scores[0, r]),
                                  self.finished_logprobs[r] if self.spec.logprobs is not None else None))
        return out


Search = SampleSearch | BeamSearch


def make_search(prompt: Sequence[int], spec: SearchSpec) -> Search:
    return BeamSearch(prompt, spec) if spec.num_beams > 1 else SampleSearch(prompt, spec)
