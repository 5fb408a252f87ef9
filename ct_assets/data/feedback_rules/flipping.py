"""The label-flipping rule: users whose labels mostly contradict the consensus of the
other users (or a confident model)."""

from __future__ import annotations

import polars as pl

from ct_assets.data.feedback_rules.thresholds import ValidationRules
from ct_assets.data.feedback_rules.work import DETAIL, KEY, PRED_CONF, PRED_LABEL, ROW


def flipping_users(candidates: pl.DataFrame, rules: ValidationRules) -> pl.DataFrame:
    """(user_id, DETAIL) of label flippers, in two passes: the second ignores the votes of
    users flagged by the first, so one flipper cannot make honest users look like flippers.
    Feedback without a user (e.g. labels from a batch job) names nobody to judge."""
    if candidates.get_column("user_id").null_count() == candidates.height:
        return pl.DataFrame(schema={"user_id": candidates.schema["user_id"], DETAIL: pl.String})
    first = _flip_pass(candidates, candidates, rules)
    voters = candidates.filter(~pl.col("user_id").is_in(first.get_column("user_id").implode()))
    if voters.height == candidates.height:
        return first
    return _flip_pass(candidates, voters, rules)


def _flip_pass(
    candidates: pl.DataFrame, voters: pl.DataFrame, rules: ValidationRules
) -> pl.DataFrame:
    key = pl.coalesce(pl.col("prediction_id"), pl.lit("\x00entity:") + pl.col("entity_id")).alias(
        KEY
    )
    judged = candidates.filter(pl.col("user_id").is_not_null()).select(
        ROW, "user_id", "label", PRED_LABEL, PRED_CONF, key
    )
    ballots = voters.select("user_id", "label", key).filter(pl.col(KEY).is_not_null())
    votes = ballots.group_by(KEY, "label").agg(pl.len().alias("votes"))
    own = (
        ballots.filter(pl.col("user_id").is_not_null())
        .group_by(KEY, "user_id", "label")
        .agg(pl.len().alias("own"))
    )
    others = (
        judged.select(ROW, "user_id", KEY)
        .join(votes, on=KEY, how="inner")
        .join(own, on=[KEY, "user_id", "label"], how="left")
        .with_columns((pl.col("votes") - pl.col("own").fill_null(0)).alias("others"))
        .filter(pl.col("others") > 0)
    )
    consensus = (
        others.filter(pl.col("others") == pl.col("others").max().over(ROW))
        .group_by(ROW)
        .agg(pl.col("label").first().alias("consensus"), pl.len().alias("tied"))
        .filter(pl.col("tied") == 1)
        .select(ROW, "consensus")
    )
    confident = pl.col(PRED_CONF) >= rules.flip_confidence
    expected = pl.coalesce(pl.col("consensus"), pl.when(confident).then(pl.col(PRED_LABEL)))
    per_user = (
        judged.join(consensus, on=ROW, how="left")
        .with_columns(expected.alias("expected"))
        .filter(pl.col("expected").is_not_null())
        .group_by("user_id")
        .agg(
            pl.len().alias("n"),
            (pl.col("label") != pl.col("expected")).sum().alias("disagree"),
        )
        .with_columns((pl.col("disagree") / pl.col("n")).alias("rate"))
    )
    peers = _median_of_others(per_user.get_column("rate").sort())
    return (
        per_user.sort("rate", "user_id")
        .with_columns(peers.alias("peers"))
        .filter(
            (pl.col("n") >= rules.flip_min_labels)
            & (pl.col("rate") > rules.flip_disagreement)
            & (pl.col("rate") > rules.flip_peer_factor * pl.col("peers").fill_null(0.0))
        )
        .sort("user_id")
        .select(
            "user_id",
            pl.format(
                "user {} contradicts the other users' consensus or a confident model on {} of"
                " {} comparable labels ({}% > {}%; median of the other users {}%)",
                pl.col("user_id"),
                pl.col("disagree"),
                pl.col("n"),
                (pl.col("rate") * 100).round(1),
                pl.lit(round(rules.flip_disagreement * 100, 1)),
                (pl.col("peers") * 100).round(1),
            ).alias(DETAIL),
        )
    )


def _median_of_others(ordered: pl.Series) -> pl.Series:
    """For each value of an ascending series, the median of all the others (leave-one-out),
    null when there are no others. Without its own value, the median's neighbours sit at
    fixed positions of the remaining list, i.e. one further right in the full list for
    values left of them."""
    others = ordered.len() - 1
    if others < 1:
        return pl.Series(values=[None] * ordered.len(), dtype=pl.Float64)
    lo, hi = (others - 1) // 2, others // 2
    position = pl.int_range(pl.len())
    frame = pl.DataFrame({"v": ordered.cast(pl.Float64)})
    below = pl.col("v").gather(pl.when(position > lo).then(lo).otherwise(lo + 1))
    above = pl.col("v").gather(pl.when(position > hi).then(hi).otherwise(hi + 1))
    return frame.select(((below + above) / 2).alias("median")).get_column("median")
