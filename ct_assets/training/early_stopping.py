"""Early stopping as a LightGBM callback whose state survives a checkpoint and resume."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import lightgbm


class EarlyStopping:
    """LightGBM's ``early_stopping(rounds, first_metric_only=True)`` callback, with a
    minimum of kept rounds, whose state can be saved and restored.

    The first validation metric alone decides (``lightgbm_params`` lists the objective's
    loss first; a second metric such as AUC is only reported): stop when it has not
    improved for ``rounds`` rounds and keep its best iteration; at the last round, keep
    it too. The first ``min_rounds`` rounds all count as improvements, so at least that
    many are kept. Iterations are absolute (they count the trees of the model boosting
    started from), so a resumed run stops where an uninterrupted one would.
    """

    def __init__(self, rounds: int, min_rounds: int = 1) -> None:
        self.rounds = rounds
        self.min_rounds = max(1, min_rounds)
        # instance attributes: lightgbm.train sets an order on callbacks without one
        self.order = 30
        self.before_iteration = False
        self.first_iteration: int | None = None
        self.maximize: list[bool] = []
        self.best_score: list[float] = []
        self.best_iter: list[int] = []
        self.best_results: list[list[tuple[str, str, float, bool]]] = []
        self.last_iteration: int | None = None

    def best_metrics(self) -> dict[str, float]:
        """Every validation metric at the deciding metric's best round (what the model
        keeps), as LightGBM names them (``binary_logloss``, ``auc`` ...)."""
        if not self.best_results:
            return {}
        return {str(r[1]): float(r[2]) for r in self.best_results[0]}

    def state(self) -> dict[str, Any]:
        """JSON-serialisable. Summary fields: the deciding metric, its best (0-based)
        iteration and score, and the rounds since it last improved."""
        summary: dict[str, Any] = {
            "metric": None,
            "best_iteration": None,
            "best_score": None,
            "rounds_without_improvement": 0,
        }
        if self.last_iteration is not None and self.best_iter and self.best_results:
            summary.update(
                metric=self.best_results[0][0][1],
                best_iteration=self.best_iter[0],
                best_score=self.best_score[0],
                rounds_without_improvement=self.last_iteration - self.best_iter[0],
            )
        return {
            **summary,
            "early_stopping": {
                "rounds": self.rounds,
                "min_rounds": self.min_rounds,
                "first_iteration": self.first_iteration,
                "last_iteration": self.last_iteration,
                "maximize": self.maximize,
                "best_score": self.best_score,
                "best_iter": self.best_iter,
                "best_results": [[list(r) for r in results] for results in self.best_results],
            },
        }

    def restore(self, state: Mapping[str, Any], iteration: int) -> None:
        """Continue from ``state()`` of a run whose last round was ``iteration - 1``."""
        try:
            saved = state["early_stopping"]
            rounds = saved["rounds"]
            min_rounds = saved.get("min_rounds", 1)
            first = saved.get("first_iteration")
            last = saved["last_iteration"]
            maximize = [bool(m) for m in saved["maximize"]]
            best_score = [float(v) for v in saved["best_score"]]
            best_iter = [int(i) for i in saved["best_iter"]]
            best_results = [
                [(str(d), str(m), float(v), bool(h)) for d, m, v, h in results]
                for results in saved["best_results"]
            ]
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise ValueError(f"early stopping state is invalid ({error!r})") from error
        n = len(maximize)
        if (
            rounds != self.rounds
            or min_rounds != self.min_rounds
            or not isinstance(last, int)
            or (n == 0 and rounds > 0)
        ):
            raise ValueError("early stopping state is of another configuration")
        if not (len(best_score) == len(best_iter) == len(best_results) == n):
            raise ValueError("early stopping state is inconsistent")
        if last != iteration - 1:
            raise ValueError(f"early stopping state is of iteration {last}, not {iteration - 1}")
        self.maximize, self.best_score, self.best_iter = maximize, best_score, best_iter
        self.best_results, self.last_iteration = best_results, last
        self.first_iteration = int(first) if first is not None else None

    def __call__(self, env: lightgbm.callback.CallbackEnv) -> None:
        import lightgbm

        if self.first_iteration is None:
            self.first_iteration = env.iteration
        self.last_iteration = env.iteration
        if self.rounds <= 0:
            return
        results = [
            (str(r[0]), str(r[1]), float(r[2]), bool(r[3]))
            for r in env.evaluation_result_list or []
        ]
        if not results:
            raise ValueError("early stopping needs at least one validation metric")
        value, maximize = results[0][2], results[0][3]
        if not self.maximize:
            self.maximize = [maximize]
            self.best_score = [float("-inf") if maximize else float("inf")]
            self.best_iter = [0]
            self.best_results = [results]
        better = value > self.best_score[0] if maximize else value < self.best_score[0]
        warming_up = env.iteration < self.first_iteration + self.min_rounds
        if better or warming_up:
            self.best_score[0], self.best_iter[0], self.best_results[0] = (
                value,
                env.iteration,
                results,
            )
        stop = env.iteration - self.best_iter[0] >= self.rounds
        if stop or env.iteration == env.end_iteration - 1:
            raise lightgbm.callback.EarlyStopException(
                self.best_iter[0], list(self.best_results[0])
            )
