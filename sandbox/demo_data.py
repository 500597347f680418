"""Synthetic hospital tables for the demo and the tests (fixed seeds, no real person)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

DIAGNOSES = ["I21", "J18", "E11", "K35", "S72"]  # MI, pneumonia, diabetes, appendicitis, hip
BASE_COST = {"I21": 9000.0, "J18": 4000.0, "E11": 2500.0, "K35": 5500.0, "S72": 12000.0}

FIELDS = [
    {"name": "patient_id", "type": "string", "sensitivity": "identifier",
     "description": "hospital-internal patient number"},
    {"name": "age", "type": "integer", "sensitivity": "internal",
     "description": "age in five-year bands (lower bound; 18: under 20, 85: 85 and over)"},
    {"name": "sex", "type": "string", "sensitivity": "internal"},
    {"name": "diagnosis", "type": "string", "sensitivity": "sensitive",
     "description": "ICD-10 three-character category"},
    {"name": "los", "type": "integer", "sensitivity": "sensitive",
     "description": "length of stay in days, top-coded at 10"},
    {"name": "cost", "type": "number", "sensitivity": "sensitive",
     "description": "treatment cost in CNY"},
]


def hospital_table(seed: int, rows: int, prefix: str) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    diagnosis = rng.choice(DIAGNOSES, size=rows, p=[0.2, 0.3, 0.25, 0.15, 0.1])
    age = np.clip(rng.normal(55, 18, rows).round(), 0, 99).astype(int)
    los = np.maximum(1, rng.poisson(5, rows))
    base = np.array([BASE_COST[d] for d in diagnosis])
    cost = (base * (1 + age / 200) + los * 350 + rng.normal(0, 800, rows)).round(2)
    return pd.DataFrame({
        "patient_id": [f"{prefix}-{i:06d}" for i in range(rows)],
        "age": age, "sex": rng.choice(["F", "M"], size=rows), "diagnosis": diagnosis,
        "los": los, "cost": np.maximum(cost, 100.0),
    })


def published_extract(table: pd.DataFrame) -> pd.DataFrame:
    """The extract a hospital registers: age in five-year bands (each band's lower bound;
    18 for under-20s, 85 for 85 and over) and length of stay top-coded at 10 days.

    Raw ages and stays have values few patients hold (a 99-year-old, a 40-day stay): a
    table suppresses their cells, and a model reading the column is withheld on the
    statistics route and refused by the provider on the joint route, since its sums
    would give those patients away beside a frequency table (docs/disclosure-control.md,
    docs/joint-statistics.md). Coded, every value is held by at least 15 episodes at
    each demo hospital, so its models and tables come out."""
    age = table["age"].to_numpy()
    return table.assign(age=np.where(age < 20, 18, np.minimum(5 * (age // 5), 85)),
                        los=np.minimum(table["los"].to_numpy(), 10))


def write_hospital(root: Path, seed: int, rows: int, prefix: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / "inpatient_episodes.csv"
    published_extract(hospital_table(seed, rows, prefix)).to_csv(path, index=False)
    return path


COST_BY_AGE_AND_DIAGNOSIS = '''\
import pandas as pd

df = pd.read_csv("/in/data.csv")
df["age_band"] = pd.cut(df["age"], [0, 18, 40, 65, 120], right=False,
                        labels=["0-17", "18-39", "40-64", "65+"])
table = (df.groupby(["age_band", "diagnosis"], observed=True)["cost"]
           .agg(n="count", mean_cost="mean").reset_index())
table["mean_cost"] = table["mean_cost"].round(2)
table.to_csv("/out/cost_by_age_and_diagnosis.csv", index=False)
print("rows read:", len(df))
'''

LOS_BY_DIAGNOSIS = '''\
import pandas as pd

df = pd.read_csv("/in/data.csv")
table = df.groupby("diagnosis")["los"].agg(n="count", mean_los="mean").reset_index()
table["mean_los"] = table["mean_los"].round(1)
table.to_csv("/out/los_by_diagnosis.csv", index=False)
'''

RAW_ROW_DUMP = '''\
import pandas as pd

# A hostile script: copy raw rows out, dressed up as an aggregate with a fake count column.
df = pd.read_csv("/in/data.csv")
df["n"] = 20
df.head(50).to_csv("/out/summary.csv", index=False)
print(df.head(20).to_string())
'''
