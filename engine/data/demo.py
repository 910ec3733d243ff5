"""Bundled demo data: the public Medical Costs data split between an insurer and a hospital."""

from __future__ import annotations

from importlib import resources

import numpy as np
import pandas as pd

#: The owners' public declarations of the demo columns' values (GROUP BY keys), per table.
DOMAINS: dict[str, dict[str, object]] = {
    "ac": {"region": ["northeast", "northwest", "southeast", "southwest"],
           "sex": [0, 1], "smoker": [0, 1]},
    "emc": {"children": {"min": 0, "max": 5}},
}


def insurance() -> pd.DataFrame:
    """The Medical Costs data set (1338 rows), with sex and smoker as 0/1 columns."""
    with resources.files("engine.data").joinpath("insurance.csv").open() as f:
        df = pd.read_csv(f)
    df["sex"] = (df["sex"] == "female").astype("int64")
    df["smoker"] = (df["smoker"] == "yes").astype("int64")
    return df


def split(df: pd.DataFrame | None = None, *, overlap: float = 0.65, seed: int = 2021
          ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Vertically split rows between ``ac`` (insurer) and ``emc`` (hospital), synthetic ids.

    Each party holds its own subset of people: ``overlap`` of all rows are in both tables,
    the rest are divided evenly between the two.  ac holds age, sex, smoker, region, charges;
    emc holds bmi and children.
    """
    df = insurance() if df is None else df
    rng = np.random.default_rng(seed)
    n = len(df)
    ids = rng.choice(np.arange(10_000_000, 99_999_999), size=n, replace=False)
    df = df.assign(id=ids).iloc[rng.permutation(n)].reset_index(drop=True)
    both = int(round(n * overlap))
    only = (n - both) // 2
    ac_rows = np.r_[0:both + only]
    emc_rows = np.r_[0:both, both + only:n]
    ac = df.iloc[ac_rows][["id", "age", "sex", "smoker", "region", "charges"]]
    emc = df.iloc[emc_rows][["id", "bmi", "children"]]
    ac = ac.sample(frac=1, random_state=seed).reset_index(drop=True)
    emc = emc.sample(frac=1, random_state=seed + 1).reset_index(drop=True)
    return ac, emc


def register(con, ac: pd.DataFrame | None = None, emc: pd.DataFrame | None = None) -> None:
    """Register the split (default :func:`split`) at ``con``'s ac and emc with key ``id``
    and the declared :data:`DOMAINS`."""
    if ac is None or emc is None:
        ac, emc = split()
    for name, frame in (("ac", ac), ("emc", emc)):
        con.register(name, frame, party=name, key="id", domains=DOMAINS[name])


def plaintext(sql: str, tables: dict[str, pd.DataFrame]) -> tuple[list[str], list[tuple]]:
    """Run ``sql`` in plain in-memory DuckDB over the same tables (the reference answer)."""
    import duckdb

    con = duckdb.connect()
    for name, frame in tables.items():
        con.register(name, frame)
    cur = con.execute(sql)
    cols = [d[0] for d in cur.description]
    return cols, cur.fetchall()
