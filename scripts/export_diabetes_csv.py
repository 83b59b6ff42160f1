"""Writes scikit-learn's bundled diabetes table (442 patients, 10 numeric features, a
disease-progression target; Efron et al. 2004) as a CSV with a header row, the input of
`hpctrain import csv ... --label progression`. Offline: the data ship inside the
scikit-learn package. Usage: python scripts/export_diabetes_csv.py [OUT.csv]"""
import csv
import sys

from sklearn.datasets import load_diabetes


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "data/diabetes.csv"
    d = load_diabetes(scaled=False)
    names = [n.replace(" ", "_") for n in d.feature_names]
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(names + ["progression"])
        for row, y in zip(d.data, d.target):
            w.writerow([repr(float(v)) for v in row] + [repr(float(y))])
    print(f"wrote {len(d.target)} rows to {out}")


if __name__ == "__main__":
    main()
