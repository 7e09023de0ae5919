#!/usr/bin/env python3
"""Start-up cost of `contracam` commands: two binaries, alternating run by run, CPU time (getrusage of the
child: user + sys) and wall time, median of N runs each.

    python3 scripts/bench_startup.py BEFORE AFTER [RUNS]

BEFORE/AFTER: two `contracam` binaries (e.g. a build before the launcher and target/release/contracam).
Commands: `--version` (handed to contracam-torch by the launcher), `data list`, `eval coco` on a one-image
problem, `data verify` of a 1 MiB file (all with --threads 1 where taken); fixtures in a temp folder.
"""
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time


def fixtures(d):
    gt = os.path.join(d, "gt.json")
    dt = os.path.join(d, "dt.json")
    with open(gt, "w") as f:
        f.write('{"images":[{"id":1,"width":100,"height":100}],"annotations":[{"id":1,"image_id":1,'
                '"category_id":1,"bbox":[10,10,40,40],"area":1600,"iscrowd":0}],'
                '"categories":[{"id":1,"name":"thing"}]}')
    with open(dt, "w") as f:
        f.write('[{"image_id":1,"category_id":1,"bbox":[10,10,40,40],"score":0.9}]')
    blob = bytes((i * 7919) % 251 for i in range(1 << 20))
    data = os.path.join(d, "data")
    os.makedirs(os.path.join(data, "tiny", "downloads"))
    with open(os.path.join(data, "tiny", "downloads", "small.bin"), "wb") as f:
        f.write(blob)
    manifest = os.path.join(d, "m.toml")
    with open(manifest, "w") as f:
        f.write('[dataset]\nname = "tiny"\ntitle = "Tiny"\nhomepage = "https://example.org/"\n'
                'licence = "none"\ncitation = "none"\n\n[[files]]\nname = "small.bin"\n'
                'urls = ["https://example.org/small.bin"]\nsize = %d\nsha256 = "%s"\n'
                'source = "bench fixture"\n' % (len(blob), hashlib.sha256(blob).hexdigest()))
    return {
        "--version": ["--version"],
        "data list": ["data", "list", "--data-dir", data],
        "eval coco": ["eval", "coco", "--gt", gt, "--dt", dt, "--threads", "1"],
        "data verify (1 MiB)": ["data", "verify", "tiny", "--manifest", manifest, "--data-dir", data,
                                "--quiet"],
    }


def one(binary, args):
    t0 = time.perf_counter()
    p = subprocess.Popen([binary] + args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    if status != 0:
        sys.exit(f"{binary} {' '.join(args)} failed ({status})")
    return ru.ru_utime + ru.ru_stime, wall


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    before, after = sys.argv[1], sys.argv[2]
    runs = int(sys.argv[3]) if len(sys.argv) > 3 else 20
    os.environ.setdefault("RAYON_NUM_THREADS", "1")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory() as d:
        cmds = fixtures(d)
        print(f"load average before: {os.getloadavg()[0]:.2f}; {runs} runs each, alternating; medians")
        print("| command | before CPU | before wall | after CPU | after wall | CPU saved |")
        print("|---|---|---|---|---|---|")
        for name, args in cmds.items():
            b, a = [], []
            one(before, args), one(after, args)  # warm the page cache
            for _ in range(runs):
                b.append(one(before, args))
                a.append(one(after, args))
            bc, bw = statistics.median(x[0] for x in b), statistics.median(x[1] for x in b)
            ac, aw = statistics.median(x[0] for x in a), statistics.median(x[1] for x in a)
            print(f"| `{name}` | {bc:.3f} s | {bw:.3f} s | {ac:.3f} s | {aw:.3f} s | {bc - ac:+.3f} s |")
        print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
