import csv, glob, sys, statistics as st
rows = {}
def read(p):
    r = list(csv.DictReader(open(p)))
    return {x["case"] if "case" in x else x[list(x)[0]]: x for x in r}
paths = {"loso θF (36 steps)": "runs/loso_fastssim/fold0/eval/fusion_specialist/metrics.csv",
         "loso θU": "runs/loso_fastssim/fold0/eval/m2cofs/metrics.csv",
         "loso mean": "runs/loso_fastssim/fold0/eval/mean/metrics.csv"}
for d in sorted(glob.glob("runs/fscreen/*/eval/metrics.csv")):
    paths[d.split("/")[2]] = d
keys = ["retention/t1ce", "retention/flair", "retention/both", "volume/Q_MI", "volume/Q_G", "volume/VIF"]
print("| run | " + " | ".join(keys) + " | min both |")
for name, p in paths.items():
    try:
        r = read(p)
    except FileNotFoundError:
        continue
    vals = {k: [float(x[k]) for x in r.values() if x.get(k) not in (None, "", "nan")] for k in keys}
    print(f"| {name} | " + " | ".join(f"{st.mean(v):.3f}" if v else "-" for v in vals.values()) + f" | {min(vals['retention/both']):.2f} |")
