"""Which masked positions a decoding step reveals, and with which tokens: pure functions on tensors.

Shape legend: B batch rows, N positions of the current block, V vocabulary.

Every function works on the device with per-row settings held in tensors ([B]), so one batch can
mix greedy and sampled rows, thresholds and policies, and nothing here reads a value back to the
host (no `.item()`): a step costs no device synchronisation. Branches depend only on host-side
flags that are fixed when the batch is built (e.g. "does any row sample?").

- `sample_tokens`: temperature, top-k, top-p, then a token per position (argmax when greedy, else the
  Gumbel-max trick with noise drawn per request), its probability (the confidence) and the entropy
  of the distribution it was drawn from;
- `reveal_top`, `reveal_threshold`, `reveal_entropy_bounded`: the three rules of config.py;
- `select_reveals`: applies each row's own rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .config import SamplerConfig

POLICY_CODES = {"steps": 0, "threshold": 1, "entropy": 2}


@dataclass
class RowSettings:
    """The per-request settings of a batch as [B] tensors, plus host-side flags fixed for the batch."""

    temperature: torch.Tensor  # float [B]; 0 = greedy
    top_p: torch.Tensor  # float [B]
    top_k: torch.Tensor  # long [B]; 0 = off
    threshold: torch.Tensor  # float [B]
    entropy_bound: torch.Tensor  # float [B]
    policy: torch.Tensor  # long [B], POLICY_CODES
    steps: torch.Tensor  # long [B]; steps per block of the `steps` policy
    random_order: torch.Tensor  # bool [B]
    frequency_penalty: torch.Tensor  # float [B]
    presence_penalty: torch.Tensor  # float [B]
    stop_ids: torch.Tensor  # long [B, K]: token ids that end each row's answer, padded with -1 (K may be 0)
    seeds: list[int] = field(default_factory=list)

    @classmethod
    def from_configs(cls, configs: list[SamplerConfig], block_length: int, device,
                     default_stop_ids: tuple[int, ...] = ()) -> "RowSettings":
        """default_stop_ids: the stop tokens of rows whose config leaves stop_token_ids unset (None)."""
        def t(values, dtype):
            return torch.tensor(values, dtype=dtype, device=device)

        stops = [default_stop_ids if c.stop_token_ids is None else c.stop_token_ids for c in configs]

        return cls(
            temperature=t([c.temperature for c in configs], torch.float32),
            top_p=t([c.top_p for c in configs], torch.float32),
            top_k=t([c.top_k for c in configs], torch.long),
            threshold=t([c.threshold for c in configs], torch.float32),
            entropy_bound=t([c.entropy_bound for c in configs], torch.float32),
            policy=t([POLICY_CODES[c.policy] for c in configs], torch.long),
            steps=t([c.steps_per_block or block_length for c in configs], torch.long),
            random_order=t([c.policy == "steps" and c.order == "random" for c in configs], torch.bool),
            frequency_penalty=t([c.frequency_penalty for c in configs], torch.float32),
            presence_penalty=t([c.presence_penalty for c in configs], torch.float32),
            stop_ids=_padded_ids(stops, device),
            seeds=[c.seed for c in configs],
        )

    def __post_init__(self) -> None:
        self._flags()

    def _flags(self) -> None:
        # Host-side copies, read once here, so that the step functions never sync to branch.
        self.any_penalty = bool((self.frequency_penalty != 0).any() or (self.presence_penalty != 0).any())
        self.sampling_rows = [i for i, v in enumerate(self.temperature.tolist()) if v > 0]
        self.random_rows = [i for i, v in enumerate(self.random_order.tolist()) if v]
        self.any_filter = bool((self.top_k > 0).any() or (self.top_p < 1).any())
        self.policies_present = set(self.policy.tolist())

    def select_rows(self, index: list[int]) -> "RowSettings":
        idx = torch.tensor(index, dtype=torch.long, device=self.temperature.device)
        return RowSettings(self.temperature[idx], self.top_p[idx], self.top_k[idx], self.threshold[idx],
                           self.entropy_bound[idx], self.policy[idx], self.steps[idx], self.random_order[idx],
                           self.frequency_penalty[idx], self.presence_penalty[idx], self.stop_ids[idx],
                           [self.seeds[i] for i in index])

    @classmethod
    def concat(cls, parts: list["RowSettings"]) -> "RowSettings":
        names = ["temperature", "top_p", "top_k", "threshold", "entropy_bound", "policy", "steps", "random_order",
                 "frequency_penalty", "presence_penalty"]
        K = max(p.stop_ids.shape[1] for p in parts)
        stop_ids = torch.cat([torch.nn.functional.pad(p.stop_ids, (0, K - p.stop_ids.shape[1]), value=-1)
                              for p in parts])
        return cls(*[torch.cat([getattr(p, n) for p in parts]) for n in names], stop_ids=stop_ids,
                   seeds=[s for p in parts for s in p.seeds])

    @property
    def fill_ids(self) -> torch.Tensor:
        """long [B]: each row's first stop id (its end-of-text), written over an ended answer's tail; -1: none."""
        return self.stop_ids[:, 0] if self.stop_ids.shape[1] else torch.full_like(self.top_k, -1)

    def is_stop(self, tokens: torch.Tensor) -> torch.Tensor:
        """bool, the shape of `tokens` ([B] or [B, N]): the token is one of its row's stop ids."""
        stops = self.stop_ids if tokens.dim() == 1 else self.stop_ids[:, None, :]
        return (tokens[..., None] == stops).any(-1)


def _padded_ids(rows: list[tuple[int, ...]], device) -> torch.Tensor:
    K = max((len(r) for r in rows), default=0)
    return torch.tensor([list(r) + [-1] * (K - len(r)) for r in rows], dtype=torch.long,
                        device=device).reshape(len(rows), K)


def filter_logits(logits: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Set to -inf every logit outside each row's top-k, then outside its top-p nucleus (HF order).

    logits [B, N, V] float; top_k [B] (0 = off); top_p [B] (1 = off). The most likely token always stays.
    """
    B, N, V = logits.shape
    sorted_logits, order = logits.sort(-1, descending=True)
    rank = torch.arange(V, device=logits.device)
    k = torch.where(top_k > 0, top_k.clamp(max=V), torch.full_like(top_k, V))
    drop = rank[None, None, :] >= k[:, None, None]
    probs = torch.softmax(sorted_logits.masked_fill(drop, float("-inf")), dim=-1)
    mass_before = probs.cumsum(-1) - probs
    drop = drop | (mass_before > top_p[:, None, None])
    drop_unsorted = torch.zeros_like(drop).scatter(-1, order, drop)
    return logits.masked_fill(drop_unsorted, float("-inf"))


def token_counts(tokens: torch.Tensor, counted: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """float [B, V]: how often each token occurs among the `counted` (bool [B, W]) columns of `tokens` [B, W]."""
    counts = torch.zeros(tokens.shape[0], vocab_size, device=tokens.device)
    return counts.scatter_add_(1, tokens.clamp(0, vocab_size - 1), counted.float())


def apply_penalties(logits: torch.Tensor, counts: torch.Tensor, settings: RowSettings) -> torch.Tensor:
    """OpenAI's penalties: logits [B, N, V] - frequency x count - presence x (count > 0), per row."""
    penalty = (settings.frequency_penalty[:, None] * counts
               + settings.presence_penalty[:, None] * (counts > 0).float())
    return logits.float() - penalty[:, None, :]


def sample_tokens(logits: torch.Tensor, settings: RowSettings,
                  gumbel: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(tokens [B, N], confidence [B, N], entropy [B, N]) for logits [B, N, V].

    Each row's distribution is softmax(filter(logits / temperature)) (temperature 1 for greedy rows,
    as in Dream); greedy rows take its argmax, sampled rows argmax(log p + Gumbel noise), an exact
    sample. Confidence is the probability of the chosen token; entropy is in nats. `gumbel` [B, N, V]
    holds zeros on greedy rows. The entropy is zeros unless a row's policy is `entropy` (the only user).
    """
    scaled = logits.float()
    if settings.sampling_rows:  # else every temperature is 1: dividing would change no bit, only cost a pass
        temperature = torch.where(settings.temperature > 0, settings.temperature,
                                  torch.ones_like(settings.temperature))
        scaled = scaled / temperature[:, None, None]
    if settings.any_filter:
        scaled = filter_logits(scaled, settings.top_k, settings.top_p)
    logp = torch.log_softmax(scaled, dim=-1)
    probs = logp.exp()
    if POLICY_CODES["entropy"] in settings.policies_present:
        entropy = -torch.where(probs > 0, probs * logp, torch.zeros_like(probs)).sum(-1)
    else:
        entropy = torch.zeros_like(probs[..., 0])
    choice = (logp + gumbel if gumbel is not None else logp).argmax(-1)
    confidence = probs.gather(-1, choice[..., None])[..., 0]
    return choice, confidence, entropy


def _ranks_descending(score: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """Rank [B, N] of each candidate by descending score (0 = best); non-candidates rank last. Ties: leftmost first."""
    s = score.masked_fill(~candidates, float("-inf"))
    order = s.argsort(dim=-1, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(-1, order, torch.arange(s.shape[-1], device=s.device).expand_as(order))
    return rank


def reveal_top(score: torch.Tensor, candidates: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """Reveal each row's `count` [B] best-scoring candidates (bool [B, N])."""
    return (_ranks_descending(score, candidates) < count[:, None]) & candidates


def reveal_threshold(confidence: torch.Tensor, candidates: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """Reveal every candidate with confidence >= threshold [B], and always each row's most confident one."""
    above = (confidence >= threshold[:, None]) & candidates
    best = reveal_top(confidence, candidates, torch.ones_like(threshold, dtype=torch.long))
    return above | best


def reveal_entropy_bounded(confidence: torch.Tensor, entropy: torch.Tensor, candidates: torch.Tensor,
                           bound: torch.Tensor) -> torch.Tensor:
    """EB-sampler: in order of confidence, the largest prefix U with sum_U H - max_U H <= bound [B] (>= 1).

    sum - max never decreases as U grows, so the accepted set is a prefix of the confidence order.
    """
    order = confidence.masked_fill(~candidates, float("-inf")).argsort(dim=-1, descending=True, stable=True)
    h = entropy.masked_fill(~candidates, 0.0).gather(-1, order)
    excess = h.cumsum(-1) - h.cummax(-1).values
    accept_sorted = excess <= bound[:, None]
    accept_sorted[:, 0] = True
    accept = torch.zeros_like(accept_sorted).scatter(-1, order, accept_sorted)
    return accept & candidates


def steps_quota(initial: torch.Tensor, steps: torch.Tensor, step_index: int) -> torch.Tensor:
    """LLaDA's linear schedule: of `initial` [B] masks and `steps` [B] steps, step i reveals
    initial // steps, plus one for the first initial % steps steps; at least one."""
    base = initial // steps
    extra = (step_index < (initial % steps)).long()
    return (base + extra).clamp(min=1)


def select_reveals(settings: RowSettings, confidence: torch.Tensor, entropy: torch.Tensor, candidates: torch.Tensor,
                   initial_masked: torch.Tensor, step_index: int,
                   random_scores: torch.Tensor | None = None) -> torch.Tensor:
    """Bool [B, N]: the positions each row reveals this step under its own policy.

    initial_masked [B]: candidates in the block at its first step (the `steps` quota); random_scores
    [B, N]: uniform scores replacing confidence for rows with random order.
    """
    reveal = torch.zeros_like(candidates)
    present = settings.policies_present
    if POLICY_CODES["steps"] in present:
        score = confidence
        if random_scores is not None:
            score = torch.where(settings.random_order[:, None], random_scores, confidence)
        quota = steps_quota(initial_masked, settings.steps, step_index)
        rows = (settings.policy == POLICY_CODES["steps"])[:, None]
        reveal = torch.where(rows, reveal_top(score, candidates, quota), reveal)
    if POLICY_CODES["threshold"] in present:
        rows = (settings.policy == POLICY_CODES["threshold"])[:, None]
        reveal = torch.where(rows, reveal_threshold(confidence, candidates, settings.threshold), reveal)
    if POLICY_CODES["entropy"] in present:
        rows = (settings.policy == POLICY_CODES["entropy"])[:, None]
        reveal = torch.where(rows, reveal_entropy_bounded(confidence, entropy, candidates, settings.entropy_bound),
                             reveal)
    return reveal
