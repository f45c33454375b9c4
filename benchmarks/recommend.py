"""Benchmark of the ALS recommender against Surprise (SVD, SVD++) and Spark MLlib's ALS, in one run.

    python benchmarks/recommend.py --movielens ../shared/data/movielens-100k/u.data
        [--config configs/recommender.toml] [--set key=value ...] [--splits 5] [--skip-svdpp] [--official]
        [--synthetic 20000000] [--synthetic-steps 5] [--spark]

(a) MovieLens 100K (the path is an argument; the data is never copied into the project): 5 seeded random 80/20
    splits. This project trains on the 80% (its validation ratings for early stopping come out of the 80%) with
    the config's settings, on an embedded cluster like the job's; Surprise's SVD and SVD++ (their defaults) train
    on the same 80%. All are scored on the same 20%: mean test RMSE and total fit+predict seconds.
(a2) With --official: MovieLens 100K's official five splits (u1-u5.base / .test, made from u.data as GroupLens's
    mku.sh makes them, in a temporary folder): the jobs themselves, `train` with the config (its default refit on)
    then `evaluate`, as a user runs them; mean test RMSE beside Surprise SVD's on the same splits.
(b) A synthetic set of ratings (20 million by default) with power-law user and item activity, like Yelp's:
    seconds per ALS step (median) at rank 32 and the peak memory of this process.
(c) With --spark (pyspark and Java installed): Spark MLlib's ALS on the same synthetic ratings with the same rank,
    lambda (Spark scales it by each row's count, as weighted_lambda does) and iterations, no biases on either
    side: seconds per iteration and test RMSE beside this project's.
(d) With --dataset: the synthetic ratings written as --dataset-files Parquet files, then the whole `train` job on
    that folder as a user runs it (an embedded cluster of --workers worker processes, or with --threads threaded
    workers in the job's process as the default config has; rank 32, the weighting of (c), --dataset-steps steps,
    random init as Spark's, no refit): its wall time and the peak RSS of the job's own process (the client;
    the workers are other processes), and, with --spark, Spark MLlib's ALS reading the same folder
    (spark.read.parquet, local[2]) for the same iterations, timed from the session's start to the fitted model.
"""

import argparse
import dataclasses
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mixlib.core.cluster import connect  # noqa: E402
from mixlib.core.config import load, read_toml  # noqa: E402
from mixlib.recsys import als, train  # noqa: E402
from mixlib.recsys import settings as recsys_settings  # noqa: E402
from mixlib.recsys.ratings import Ratings, read_ratings, split, user_means  # noqa: E402


class PeakMemory:
    """Samples this process's RSS (and its children's) every 50 ms."""

    def __init__(self):
        self.process, self.peak, self._stop = psutil.Process(), 0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self):
        while not self._stop.is_set():
            tree = [self.process] + self.process.children(recursive=True)
            self.peak = max(self.peak, sum(p.memory_info().rss for p in tree if p.is_running()))
            self._stop.wait(0.05)

    def stop(self):
        self._stop.set()
        self._thread.join()
        return self.peak


def settings_from(config, overrides):
    """TrainSettings from a config file (serving keys ignored) and ``key=value`` overrides."""
    known = {f.name: f for f in dataclasses.fields(recsys_settings.TrainSettings)}
    values = {k: v for k, v in read_toml(config).items() if k in known}
    for item in overrides:
        key, _, text = item.partition("=")
        kind = known[key].type
        values[key] = (text.lower() == "true") if kind is bool else kind(text)
    return load(recsys_settings.TrainSettings, values, config, {})


# --------------------------------------------------------------------------------------------- ours

def fit_ours(client, ratings, train_rows, settings):
    """Train on ``train_rows`` (validation carved out of them); return (model factors, mu, user means)."""
    validation = settings.validation
    inner_train, inner_validation, _ = split(len(train_rows), validation if validation < 1 else int(validation), 0,
                                             settings.seed)
    parts = {"train": train_rows[inner_train], "validation": train_rows[inner_validation], "test": np.zeros(0, int)}
    means = user_means(ratings.subset(parts["train"])) if settings.shift_user_means else np.zeros(len(ratings.user_ids))
    data = train.training_data(ratings, parts, means, settings.global_bias)
    params = recsys_settings.als_params(settings)
    rng = np.random.default_rng(np.random.SeedSequence([settings.seed, 1]))
    state = als.TrainingState.start(*als.initial_items(data, params, rng))
    final, _ = als.fit_als(client, data, params, state)
    return final, data.mu, means


def predict_ours(fit, ratings, rows):
    final, mu, means = fit
    f = final.best.here()
    users, items = ratings.users[rows], ratings.items[rows]
    return als.predict(f.user_factors, f.user_bias, f.item_factors, f.item_bias, mu, users, items) + means[users]


# ----------------------------------------------------------------------------------------- Surprise

def surprise_run(algorithm, ratings, train_rows, test_rows, folder):
    """Fit a Surprise algorithm on the training rows and predict the test rows (files in ``folder``)."""
    from surprise import Dataset, Reader
    from surprise.model_selection import PredefinedKFold

    paths = []
    for name, rows in (("train", train_rows), ("test", test_rows)):
        path = folder / f"{name}.tsv"
        np.savetxt(path, np.column_stack([ratings.users[rows], ratings.items[rows], ratings.values[rows]]),
                   fmt=["%d", "%d", "%.6g"], delimiter="\t")
        paths.append(str(path))
    data = Dataset.load_from_folds([tuple(paths)], Reader(line_format="user item rating", sep="\t",
                                                          rating_scale=(ratings.values.min(), ratings.values.max())))
    trainset, testset = next(PredefinedKFold().split(data))
    started = time.perf_counter()
    algorithm.fit(trainset)
    predictions = algorithm.test(testset)
    seconds = time.perf_counter() - started
    return seconds, np.array([p.est for p in predictions]), np.array([p.r_ui for p in predictions])


def movielens(path, settings, n_splits, skip_svdpp):
    from surprise import SVD, SVDpp

    ratings = read_ratings(path)
    peers = {"Surprise SVD": lambda seed: SVD(random_state=seed)}
    if not skip_svdpp:
        peers["Surprise SVD++"] = lambda seed: SVDpp(random_state=seed)
    results = {name: ([], []) for name in ["mixlib ALS", *peers]}
    with connect(settings) as client, tempfile.TemporaryDirectory() as folder:
        for seed in range(n_splits):
            order = np.random.default_rng(seed).permutation(len(ratings.values))
            cut = int(0.8 * len(order))
            train_rows, test_rows = np.sort(order[:cut]), np.sort(order[cut:])
            started = time.perf_counter()
            fit = fit_ours(client, ratings, train_rows, dataclasses.replace(settings, seed=seed))
            predicted = np.clip(predict_ours(fit, ratings, test_rows), ratings.values.min(), ratings.values.max())
            results["mixlib ALS"][0].append(time.perf_counter() - started)
            results["mixlib ALS"][1].append(np.sqrt(np.mean((ratings.values[test_rows] - predicted) ** 2)))
            for name, make in peers.items():
                seconds, estimates, truth = surprise_run(make(seed), ratings, train_rows, test_rows, Path(folder))
                results[name][0].append(seconds)
                results[name][1].append(np.sqrt(np.mean((truth - estimates) ** 2)))
            print(f"  split {seed}: " + ", ".join(f"{n} {r[1][-1]:.4f} ({r[0][-1]:.1f} s)" for n, r in results.items()),
                  flush=True)
    ours = sum(results["mixlib ALS"][0])
    print(f"\nMovieLens 100K ({path}): {n_splits} random 80/20 splits; rank {settings.rank}, lambda "
          f"{settings.reg_lambda}{' x count' if settings.weighted_lambda else ''}, biases "
          f"{settings.global_bias}/{settings.user_bias}/{settings.item_bias}")
    print(f"  {'':18s} {'mean test RMSE':>15s} {'total seconds':>14s} {'time / mixlib':>14s}")
    for name, (seconds, rmse) in results.items():
        print(f"  {name:18s} {np.mean(rmse):15.4f} {sum(seconds):14.1f} {sum(seconds) / ours:14.2f}")


# ------------------------------------------------------------------------------------ official splits

def official_splits(path, folder):
    """Write u1-u5.base/.test as GroupLens's mku.sh does: test i is rows 20000 (i - 1) to 20000 i of u.data in
    file order, base i the others, each sorted by user then item. Returns [(base path, test path)]."""
    lines = Path(path).read_text().splitlines()
    key = lambda line: tuple(int(v) for v in line.split("\t")[:2])  # noqa: E731
    pairs = []
    for i in range(1, 6):
        test, base = lines[(i - 1) * 20000:i * 20000], lines[:(i - 1) * 20000] + lines[i * 20000:]
        for name, rows in ((f"u{i}.base", base), (f"u{i}.test", test)):
            (folder / name).write_text("\n".join(sorted(rows, key=key)) + "\n")
        pairs.append((folder / f"u{i}.base", folder / f"u{i}.test"))
    return pairs


def official(path, config, overrides):
    """The jobs on the official splits: mean test RMSE of `train` (the config) + `evaluate`, and Surprise SVD's."""
    import json
    import subprocess

    from surprise import SVD

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        for number, (base, test) in enumerate(official_splits(path, folder), start=1):
            models, metrics = folder / f"models{number}", folder / f"eval{number}.json"
            common = ["--model-dir", str(models), "--config", str(config), "--log-level", "warning"]
            sets = [f"--{key.replace('_', '-')}={value}" for key, value in (o.split("=", 1) for o in overrides)]
            started = time.perf_counter()
            subprocess.run([sys.executable, "-m", "jobs.recommend", "train", "--ratings", str(base), *common, *sets,
                            "--dashboard-address", "127.0.0.1:0"], cwd=ROOT, check=True)
            seconds = time.perf_counter() - started
            subprocess.run([sys.executable, "-m", "jobs.recommend", "evaluate", "--ratings", str(test), *common,
                            "--top", "0", "--metrics", str(metrics)], cwd=ROOT, check=True)
            ours = json.loads(metrics.read_text())["rmse"]
            ratings = read_ratings(base)
            heldout = read_ratings(test)
            svd_seconds, svd_rmse = surprise_on_files(SVD(random_state=0), base, test, ratings, heldout)
            rows.append((ours, seconds, svd_rmse, svd_seconds))
            print(f"  u{number}: mixlib {ours:.4f} ({seconds:.1f} s, the whole train command), Surprise SVD "
                  f"{svd_rmse:.4f} ({svd_seconds:.1f} s)", flush=True)
    ours, seconds, svd, svd_seconds = np.array(rows).T
    print(f"\nMovieLens 100K official splits u1-u5, {config.name}{' with ' + ' '.join(overrides) if overrides else ''}:"
          f" mean test RMSE mixlib {ours.mean():.4f}, Surprise SVD {svd.mean():.4f}")


def surprise_on_files(algorithm, base, test, ratings, heldout):
    """Surprise fitted on the ``base`` file and scored on ``test``: (fit+predict seconds, RMSE)."""
    from surprise import Dataset, Reader
    from surprise.model_selection import PredefinedKFold

    scale = (float(ratings.values.min()), float(ratings.values.max()))
    data = Dataset.load_from_folds([(str(base), str(test))], Reader(line_format="user item rating timestamp",
                                                                    sep="\t", rating_scale=scale))
    trainset, testset = next(PredefinedKFold().split(data))
    started = time.perf_counter()
    algorithm.fit(trainset)
    predictions = algorithm.test(testset)
    seconds = time.perf_counter() - started
    return seconds, float(np.sqrt(np.mean([(p.est - p.r_ui) ** 2 for p in predictions])))


# ---------------------------------------------------------------------------------------- synthetic

def power_law_ratings(n_ratings, seed, rank=8):
    """``n_ratings`` distinct (user, item) pairs with Zipf-like activity and ratings from a low-rank model."""
    rng = np.random.default_rng(seed)
    n_users, n_items = n_ratings // 10, n_ratings // 100
    user_weight = 1.0 / np.arange(1, n_users + 1) ** 0.8
    item_weight = 1.0 / np.arange(1, n_items + 1) ** 1.0
    pairs = np.zeros(0, np.int64)
    while len(pairs) < n_ratings:  # popular pairs repeat: draw until there are enough distinct ones
        draws = int((n_ratings - len(pairs)) * 1.3) + 1000
        users = rng.choice(n_users, draws, p=user_weight / user_weight.sum())
        items = rng.choice(n_items, draws, p=item_weight / item_weight.sum())
        pairs = np.unique(np.concatenate([pairs, users.astype(np.int64) * n_items + items]))
    pairs = np.sort(rng.choice(pairs, n_ratings, replace=False))
    users, items = pairs // n_items, pairs % n_items
    p, q = rng.normal(0, 0.5, (n_users, rank)), rng.normal(0, 0.5, (n_items, rank))
    values = np.clip(3.5 + np.einsum("nk,nk->n", p[users], q[items]) + rng.normal(0, 0.5, len(users)), 1, 5)
    return Ratings(users, items, values, np.arange(n_users), np.arange(n_items))


def synthetic(settings, n_ratings, steps, spark):
    memory = PeakMemory()
    started = time.perf_counter()
    ratings = power_law_ratings(n_ratings, seed=0).reindexed()
    n_users, n_items, n = ratings.shape
    print(f"\nsynthetic power-law ratings: {n} ratings, {n_users} users, {n_items} items "
          f"(built in {time.perf_counter() - started:.0f} s)", flush=True)
    test = np.random.default_rng(1).random(n) < 0.01
    settings = dataclasses.replace(settings, max_steps=steps, eval_every=steps, log_every=steps, patience=steps)
    parts = {"train": np.flatnonzero(~test), "validation": np.flatnonzero(test), "test": np.zeros(0, int)}
    rows = {}
    with connect(settings) as client:
        data = train.training_data(ratings, parts, np.zeros(n_users), settings.global_bias)
        params = recsys_settings.als_params(settings)
        state = als.TrainingState.start(*als.initial_items(data, params, np.random.default_rng(0)))
        marks = [time.perf_counter()]
        final, _ = als.fit_als(client, data, params, state, checkpoint=lambda s: marks.append(time.perf_counter()),
                               checkpoint_every=1)
    per_step = np.diff(marks)[1:]  # the first interval also holds scattering the blocks
    peak = memory.stop()
    rmse, n_warm = warm_rmse(ratings, parts, final.best.here())
    rows["mixlib ALS"] = (statistics.median(per_step), rmse)
    print(f"  mixlib ALS, rank {settings.rank}: {statistics.median(per_step):.2f} s per step (median of "
          f"{len(per_step)}; first step with the scatter {marks[1] - marks[0]:.1f} s), test RMSE {rmse:.4f} on the "
          f"{n_warm} of {len(parts['validation'])} test ratings whose user and item have training ratings, peak "
          f"memory {peak / 2**30:.2f} GiB", flush=True)
    if spark:
        rows["Spark MLlib ALS"] = spark_als(ratings, parts, settings, steps)
        print(f"  Spark MLlib ALS: {rows['Spark MLlib ALS'][0]:.2f} s per iteration, test RMSE "
              f"{rows['Spark MLlib ALS'][1]:.4f}")
        print(f"  mixlib time / Spark time: {rows['mixlib ALS'][0] / rows['Spark MLlib ALS'][0]:.2f}")


def warm_rmse(ratings, parts, factors):
    """RMSE of ``factors`` on the test ratings whose user and item both have training ratings, and their count."""
    rows = parts["validation"]
    trained_users = np.bincount(ratings.users[parts["train"]], minlength=len(ratings.user_ids)) > 0
    trained_items = np.bincount(ratings.items[parts["train"]], minlength=len(ratings.item_ids)) > 0
    rows = rows[trained_users[ratings.users[rows]] & trained_items[ratings.items[rows]]]
    f = factors
    predicted = als.predict(f.user_factors, f.user_bias, f.item_factors, f.item_bias, 0.0, ratings.users[rows],
                            ratings.items[rows])
    return float(np.sqrt(np.mean((ratings.values[rows] - predicted) ** 2))), len(rows)


def local_spark():
    """A Spark session on this machine's 2 cores (local[2]), quiet, on the loopback interface."""
    from pyspark.sql import SparkSession

    spark = (SparkSession.builder.master("local[2]").config("spark.driver.memory", "8g")
             .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
             .config("spark.driver.host", "127.0.0.1").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def spark_als(ratings, parts, settings, steps):
    """Spark MLlib's ALS (local[2]) on the same ratings: (seconds per iteration, test RMSE).

    Per-iteration time: after a warm-up fit, the fit with ``steps`` iterations minus the fit with 1, over
    ``steps - 1`` (the JVM's start and data loading cancel out). The RMSE is the ``steps``-iteration model's, on
    the test ratings whose user and item have training ratings (Spark's coldStartStrategy="drop")."""
    from pyspark.ml.recommendation import ALS

    folder = tempfile.mkdtemp()
    spark = local_spark()
    try:
        def frame(rows, name):
            import pyarrow as pa
            import pyarrow.parquet as pq

            path = Path(folder) / f"{name}.parquet"
            pq.write_table(pa.table({"user": ratings.users[rows].astype(np.int32),
                                     "item": ratings.items[rows].astype(np.int32),
                                     "rating": ratings.values[rows].astype(np.float32)}), path)
            return spark.read.parquet(str(path))

        train, test = frame(parts["train"], "train").cache(), frame(parts["validation"], "test").cache()
        train.count()
        times = {}
        for iterations in (1, 1, steps):  # the first is a warm-up
            model_spec = ALS(rank=settings.rank, maxIter=iterations, regParam=settings.reg_lambda, userCol="user",
                             itemCol="item", ratingCol="rating", coldStartStrategy="drop", seed=0)
            started = time.perf_counter()
            model = model_spec.fit(train)
            model.userFactors.count()
            times[iterations] = time.perf_counter() - started
        predicted = np.array(model.transform(test).select("prediction", "rating").collect())
        rmse = float(np.sqrt(np.mean((predicted[:, 0] - predicted[:, 1]) ** 2)))
        return (times[steps] - times[1]) / (steps - 1), rmse
    finally:
        spark.stop()
        import shutil

        shutil.rmtree(folder, ignore_errors=True)


# ----------------------------------------------------------------------------------------- datasets

def write_dataset(ratings, folder, n_files):
    """The ratings as ``n_files`` Parquet files of user, item, rating, in a random order of rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    order = np.random.default_rng(2).permutation(ratings.shape[2])
    for number, rows in enumerate(np.array_split(order, n_files)):
        pq.write_table(pa.table({"user": ratings.users[rows].astype(np.int64),
                                 "item": ratings.items[rows].astype(np.int64),
                                 "rating": ratings.values[rows].astype(np.float64)}),
                       folder / f"part-{number:05d}.parquet")
    return folder


def job_peak(command, log_path):
    """Run ``command``; ``(seconds, peak RSS of its own process in bytes, exit status)``."""
    import subprocess

    started = time.perf_counter()
    with open(log_path, "w") as log_file:
        process = subprocess.Popen(command, cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT)
        job, peak = psutil.Process(process.pid), 0
        while process.poll() is None:
            try:
                peak = max(peak, job.memory_info().rss)
            except psutil.Error:
                pass
            time.sleep(0.05)
    return time.perf_counter() - started, peak, process.returncode


def dataset(n_ratings, n_files, steps, workers, spark, processes=True):
    ratings = power_law_ratings(n_ratings, seed=0)
    with tempfile.TemporaryDirectory(prefix="mixlib-dataset-") as tmp:
        folder = write_dataset(ratings, Path(tmp) / "ratings", n_files)
        size = sum(p.stat().st_size for p in folder.iterdir())
        print(f"\ndataset: {n_ratings} synthetic ratings in {n_files} Parquet files ({size / 2**20:.0f} MiB)",
              flush=True)
        del ratings
        command = [sys.executable, "-m", "jobs.recommend", "train", "--ratings", str(folder), "--model-dir",
                   str(Path(tmp) / "models"), "--rank", "32", "--reg-lambda", "0.13", "--lambda-exponent", "1",
                   "--no-global-bias", "--no-user-bias", "--no-item-bias", "--max-steps", str(steps), "--init",
                   "random", "--eval-every", "1", "--log-every", "1", "--validation", "0.01", "--test", "0",
                   "--no-refit", "--force-publish", "--processes" if processes else "--no-processes", "--workers",
                   str(workers), "--dashboard-address",
                   "127.0.0.1:0", "--log-level", "info"]
        seconds, peak, status = job_peak(command, Path(tmp) / "train.log")
        log_text = (Path(tmp) / "train.log").read_text()
        if status:
            sys.exit(f"train exited {status}:\n{log_text[-3000:]}")
        stamps = [_clock(line) for line in log_text.splitlines() if " INFO Iteration " in line]
        per_step = (stamps[-1] - stamps[0]) / (len(stamps) - 1) if len(stamps) > 1 else float("nan")
        kind = f"{workers} worker processes" if processes else f"{workers} threaded workers, in the job's process"
        print(f"  mixlib train (whole job, {kind}): {seconds:.1f} s, {per_step:.1f} s per step (log stamps, steps 1 "
              f"to {len(stamps)}), peak RSS of the job's process {peak / 2**30:.2f} GiB", flush=True)
        if spark:
            spark_seconds, spark_step = spark_on_folder(folder, steps)
            print(f"  Spark MLlib (read + ALS, {steps} iterations): {spark_seconds:.1f} s, {spark_step:.1f} s per "
                  f"iteration; mixlib / Spark: whole {seconds / spark_seconds:.2f}, per step "
                  f"{per_step / spark_step:.2f}", flush=True)


def _clock(line):
    """Seconds since midnight of a log line's ``HH:MM:SS`` stamp."""
    hours, minutes, seconds = map(int, line[:8].split(":"))
    return 3600 * hours + 60 * minutes + seconds


def spark_on_folder(folder, steps):
    """``(seconds, seconds per iteration)``: from a Spark session's start to an ALS model of ``steps`` iterations
    fitted on the Parquet files of ``folder`` (local[2], the settings of :func:`spark_als`); per iteration, that fit
    less a 1-iteration fit on the cached data, over ``steps - 1``."""
    started = time.perf_counter()
    from pyspark.ml.recommendation import ALS

    spark = local_spark()
    try:
        def fit(frame, iterations):
            model = ALS(rank=32, maxIter=iterations, regParam=0.13, userCol="user", itemCol="item",
                        ratingCol="rating", seed=0).fit(frame)
            model.userFactors.count()

        fit(spark.read.parquet(str(folder)), steps)
        whole = time.perf_counter() - started
        cached = spark.read.parquet(str(folder)).cache()
        cached.count()
        times = {}
        for iterations in (1, steps):
            mark = time.perf_counter()
            fit(cached, iterations)
            times[iterations] = time.perf_counter() - mark
        return whole, (times[steps] - times[1]) / (steps - 1)
    finally:
        spark.stop()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--movielens", type=Path, help="MovieLens 100K u.data")
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "recommender.toml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    parser.add_argument("--splits", type=int, default=5)
    parser.add_argument("--official", action="store_true", help="also the jobs on the official u1-u5 splits")
    parser.add_argument("--skip-svdpp", action="store_true", help="SVD++ takes minutes per split")
    parser.add_argument("--synthetic", type=int, default=20_000_000, help="ratings of the synthetic set (0: skip)")
    parser.add_argument("--synthetic-steps", type=int, default=5)
    parser.add_argument("--spark", action="store_true", help="also time Spark MLlib's ALS on the synthetic set")
    parser.add_argument("--dataset", action="store_true", help="the train job on the synthetic set as Parquet files")
    parser.add_argument("--dataset-files", type=int, default=20)
    parser.add_argument("--dataset-steps", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", action="store_true", help="--dataset: threaded workers in the job's process "
                        "(the default config's) instead of worker processes")
    args = parser.parse_args()
    settings = settings_from(args.config, ["log_level=warning", "dashboard_address=127.0.0.1:0", *args.set])
    import logging

    logging.basicConfig(level=logging.WARNING)
    if args.movielens:
        movielens(args.movielens, settings, args.splits, args.skip_svdpp)
    if args.movielens and args.official:
        official(args.movielens, args.config, args.set)
    if args.synthetic and args.dataset:
        dataset(args.synthetic, args.dataset_files, args.dataset_steps, args.workers, args.spark,
                processes=not args.threads)
        return
    if args.synthetic:
        # Spark's ALS scales regParam by each row's count (ALS-WR): the same weighting on both sides.
        synthetic_settings = dataclasses.replace(settings, rank=32, global_bias=False, user_bias=False,
                                                 item_bias=False, weighted_lambda=True, lambda_exponent=1.0,
                                                 reg_lambda=0.13)
        synthetic(synthetic_settings, args.synthetic, args.synthetic_steps, args.spark)


if __name__ == "__main__":
    main()
