"""Recommender inputs found by content and by header names, clipped predictions, the guardrail's bias-only
baseline, and log lines in words (issue 11, items 6, 7 and part of 8).

References are independent of mixlib: hand-made files, hand-computed predictions, and the baseline's normal
equations solved densely with numpy.
"""

import json

import numpy as np
import pytest
from conftest import REPO
from test_recsys_recommend_job import FAST, one_error_line, published, synthetic, write_csv

from mixlib.core.errors import InputError
from mixlib.recsys.als import fit_baseline
from mixlib.recsys.ratings import read_id_columns, read_ratings
from mixlib.recsys.shards import split_keys
from mixlib.recsys.store import Model, ModelStore

U1 = "1\t1\t5\t874965758\n1\t2\t3\t876893171\n2\t1\t4\t888550871\n3\t7\t1\t878542960\n"


def triplets(ratings):
    return {(ratings.user_ids[u].item(), ratings.item_ids[i].item(), v)
            for u, i, v in zip(ratings.users, ratings.items, ratings.values)}


# ------------------------------------------------------------------------------- formats by content

@pytest.mark.parametrize("name", ["u1.base", "u1.test", "ratings", "export.dat"])
def test_movielens_split_files_are_read_by_content(tmp_path, name):
    path = tmp_path / name
    path.write_text(U1)
    assert triplets(read_ratings(path)) == {(1, 1, 5.0), (1, 2, 3.0), (2, 1, 4.0), (3, 7, 1.0)}


def test_npy_and_parquet_are_recognised_by_their_magic_bytes(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    np.save(tmp_path / "r.npy", np.array([[1, 2, 3.0], [4, 5, 1.0]]))
    (tmp_path / "r.npy").rename(tmp_path / "r.array")
    assert triplets(read_ratings(tmp_path / "r.array")) == {(1, 2, 3.0), (4, 5, 1.0)}
    pq.write_table(pa.table({"user": [1], "item": [2], "rating": [3.0]}), tmp_path / "r.pq")
    assert triplets(read_ratings(tmp_path / "r.pq")) == {(1, 2, 3.0)}


@pytest.mark.parametrize("content, reason", [(b"\x00\x01\x02binary\xff" * 50, "binary content"),
                                             (b"1,2\n3,4\n5,6\n", "rows of 2 field(s)"),
                                             (b"just some words\nand more words\n", "no numbers")])
def test_unknown_suffix_that_is_not_delimited_rows_is_refused(tmp_path, content, reason):
    path = tmp_path / "r.bin"
    path.write_bytes(content)
    with pytest.raises(InputError, match="unknown format") as e:
        read_ratings(path)
    assert reason in str(e.value) and "\n" not in str(e.value)


def test_a_folder_is_said_to_be_a_folder(tmp_path):
    (tmp_path / "dataset").mkdir()
    with pytest.raises(InputError, match="is a folder; give one file"):
        read_ratings(tmp_path / "dataset")
    with pytest.raises(InputError, match="is a folder; give one file"):
        read_id_columns(tmp_path / "dataset", ("user", "item"))


# ----------------------------------------------------------------------------------- header names

@pytest.mark.parametrize("header", ["userId,movieId,rating,timestamp", "USER_ID,ITEM_ID,Rating,ts",
                                    "movieId,userId,rating", "rating,item,user", "user,item,score"])
def test_common_header_names_in_any_case_and_order(tmp_path, header):
    order = [field.lower() for field in header.split(",")]
    rows = [{"user": "7", "item": "30", "rating": "4.5"}, {"user": "8", "item": "30", "rating": "2"}]
    lines = [header] + [",".join(row.get(_role(f), "0") for f in order) for row in rows]
    path = tmp_path / "r.csv"
    path.write_text("\n".join(lines) + "\n")
    assert triplets(read_ratings(path)) == {(7, 30, 4.5), (8, 30, 2.0)}


def _role(field):
    return {"userid": "user", "user_id": "user", "movieid": "item", "item_id": "item", "score": "rating"}.get(field,
                                                                                                          field)


def test_given_column_names_for_text_and_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = {"user": "Diner", "item": "restaurant", "rating": "stars"}
    (tmp_path / "r.csv").write_text("when,stars,restaurant,diner\n1,4,pizza,ann\n2,2,sushi,bob\n")
    pq.write_table(pa.table({"when": [1, 2], "stars": [4, 2], "restaurant": ["pizza", "sushi"],
                             "Diner": ["ann", "bob"]}), tmp_path / "r.parquet")
    for path in (tmp_path / "r.csv", tmp_path / "r.parquet"):
        assert triplets(read_ratings(path, names=names)) == {("ann", "pizza", 4.0), ("bob", "sushi", 2.0)}
    with pytest.raises(InputError, match=r"no 'grade' \(rating\) column.*--rating-col"):
        read_ratings(tmp_path / "r.parquet", names={**names, "rating": "grade"})
    with pytest.raises(InputError, match=r"has no 'grade' \(rating\) column.*--rating-col"):
        read_ratings(tmp_path / "r.csv", names={**names, "rating": "grade"})
    (tmp_path / "plain.csv").write_text("1,2,3\n")
    with pytest.raises(InputError, match="has no header line, so --user-col cannot name"):
        read_ratings(tmp_path / "plain.csv", names={"user": "diner"})


def test_a_header_naming_a_column_that_takes_another_role_position_is_refused(tmp_path):
    (tmp_path / "r.csv").write_text("stars,user,item\n4,ann,pizza\n")
    with pytest.raises(InputError, match="has no rating column; name it with --rating-col"):
        read_ratings(tmp_path / "r.csv")


@pytest.mark.parametrize("text", ["userId,movieId\n1,10\n2,20\n", "user_id\titem_id\n1\t10\n2\t20\n",
                                  "1,10\n2,20\n", "movieId,userId\n10,1\n20,2\n"])
def test_pair_files_with_common_headers_or_none(tmp_path, text):
    path = tmp_path / "pairs.csv"
    path.write_text(text)
    users, items = read_id_columns(path, ("user", "item"))
    assert list(users) == ["1", "2"] and list(items) == ["10", "20"]


def test_pair_files_with_given_names_and_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "pairs.csv").write_text("Diner,Place\nann,pizza\n")
    users, items = read_id_columns(tmp_path / "pairs.csv", ("user", "item"), {"user": "diner", "item": "place"})
    assert list(users) == ["ann"] and list(items) == ["pizza"]
    pq.write_table(pa.table({"movieId": [10, 20], "userId": [1, 2]}), tmp_path / "pairs.parquet")
    users, items = read_id_columns(tmp_path / "pairs.parquet", ("user", "item"))
    assert list(users) == ["1", "2"] and list(items) == ["10", "20"]


@pytest.mark.parametrize("text, roles", [("uid,mid\n1,10\n2,20\n", ("user", "item")),
                                         ("uid;mid\n1;10\n2;20\n", ("user", "item")),
                                         ("uid\n1\n2\n", ("user",)),
                                         ("uid,mid,stars\n1,10,4\n2,20,3\n", ("user", "item", "rating")),
                                         ("a\tb\tc\tts\n1\t10\t4\t99\n", ("user", "item", "rating")),
                                         ("uid,mid\n1,film\n2,other film\n", ("user", "item"))])
def test_a_header_of_unknown_names_above_numeric_ids_is_refused(tmp_path, text, roles):
    """Words above numbers are a header; names that are not known are refused with the flags that name them."""
    path = tmp_path / "f.csv"
    path.write_text(text)
    fields = text.splitlines()[0].replace(";", ",").replace("\t", ",").split(",")
    with pytest.raises(InputError, match="is a header .words above numbers. naming no known column") as e:
        read_ratings(path) if "rating" in roles else read_id_columns(path, roles)
    message = str(e.value)
    assert "\n" not in message and f"({', '.join(fields)})" in message
    assert all(f"--{role}-col {field}" in message for role, field in zip(roles, fields))


def test_named_unknown_headers_and_string_ids_without_a_header(tmp_path):
    (tmp_path / "pairs.csv").write_text("uid,mid\n1,10\n2,20\n")
    users, items = read_id_columns(tmp_path / "pairs.csv", ("user", "item"), {"user": "UID", "item": "mid"})
    assert list(users) == ["1", "2"] and list(items) == ["10", "20"]
    with pytest.raises(InputError, match=r"header \(uid, mid\) has no 'diner' \(user\) column"):
        read_id_columns(tmp_path / "pairs.csv", ("user", "item"), {"user": "diner"})
    (tmp_path / "r.csv").write_text("uid,mid,stars\n1,10,4\n2,20,3\n")
    assert triplets(read_ratings(tmp_path / "r.csv", names={"user": "uid", "item": "mid", "rating": "stars"})) == {
        (1, 10, 4.0), (2, 20, 3.0)}
    # String ids without a header: the first row is data (nothing says otherwise), in pair files and ratings.
    (tmp_path / "strings.csv").write_text("ann,pizza\nbob,sushi\n")
    users, items = read_id_columns(tmp_path / "strings.csv", ("user", "item"))
    assert list(users) == ["ann", "bob"] and list(items) == ["pizza", "sushi"]
    (tmp_path / "mixed.csv").write_text("ann,10\nbob,20\n")  # a numeric column, but its first value is a number
    assert list(read_id_columns(tmp_path / "mixed.csv", ("user", "item"))[0]) == ["ann", "bob"]
    (tmp_path / "r2.csv").write_text("ann,pizza,4\nbob,sushi,2\n")
    assert triplets(read_ratings(tmp_path / "r2.csv")) == {("ann", "pizza", 4.0), ("bob", "sushi", 2.0)}
    # A first row with an empty id is an invalid row, not a header.
    (tmp_path / "r3.csv").write_text(",10,4\n2,20,3\n")
    with pytest.raises(InputError, match="first at row 1"):
        read_ratings(tmp_path / "r3.csv")


def test_predict_and_recommend_refuse_an_unknown_header(run_recommend, tmp_path, capsys):
    """predict and recommend --users with numeric ids, as MovieLens' (exit 2, one line, no output written)."""
    models = tmp_path / "models"
    rows = synthetic(seed=21, n_users=80, n_items=40, density=0.5, user_prefix="")
    assert run_recommend("train", "--ratings", write_csv(tmp_path / "r.csv", rows), "--model-dir", models, *FAST,
                         "--force-publish") == 0
    user = published(models)[1]["user_ids"][0]
    (tmp_path / "pairs.csv").write_text(f"uid,mid\n{user},101\n")
    (tmp_path / "users.csv").write_text(f"uid\n{user}\n")
    for argv in (("predict", "--pairs", tmp_path / "pairs.csv"), ("recommend", "--users", tmp_path / "users.csv")):
        status = run_recommend(*argv, "--model-dir", models, "--out", tmp_path / "out.csv")
        err = capsys.readouterr().err.strip().splitlines()
        assert status == 2 and one_error_line(err) and "naming no known column" in err[-1], err
        assert not (tmp_path / "out.csv").exists()
    assert run_recommend("predict", "--pairs", tmp_path / "pairs.csv", "--user-col", "uid", "--item-col", "mid",
                         "--model-dir", models, "--out", tmp_path / "out.csv") == 0
    assert (tmp_path / "out.csv").read_text().splitlines()[1].startswith(f"{user},101,")


# ------------------------------------------------------------------------------------------ clipping

def tiny_model(rating_range):
    """Two users, two items, rank 1: predictions 3 + p_u q_i with p = (2, -2), q = (1.5, 0.1)."""
    from mixlib.recsys.als import Factors

    factors = Factors(np.array([[2.0], [-2.0]]), np.zeros(2), np.array([[1.5], [0.1]]), np.zeros(2))
    return Model(factors, 3.0, np.zeros(2), np.array([1, 2]), np.array([10, 20]), np.array([0, 0, 0]),
                 np.zeros(0, np.int64), {}, {}, rating_range)


def test_predictions_are_clipped_to_the_training_range_unless_asked_not_to(tmp_path):
    users, items = np.array([0, 0, 1, 1, -1]), np.array([0, 1, 0, 1, 0])
    unclipped = [6.0, 3.2, 0.0, 2.8, 3.0]  # 3 + 2*1.5, 3 + 2*0.1, 3 - 2*1.5, 3 - 2*0.1, mu
    model = tiny_model((1.0, 5.0))
    np.testing.assert_allclose(model.predict_indices(users, items, True), [5.0, 3.2, 1.0, 2.8, 3.0])
    np.testing.assert_allclose(model.predict_indices(users, items, False), unclipped)
    # A model stored without a range (before it was kept) is not clipped; a stored range comes back.
    store = ModelStore(tmp_path / "models")
    store.publish(tiny_model(None))
    np.testing.assert_allclose(store.load().predict_indices(users, items, True), unclipped)
    store.publish(model)
    assert store.load().rating_range == (1.0, 5.0)


def stretched_ratings():
    """Integer ratings 1..5 of a low-rank model spread wide enough that some predictions fall outside 1..5."""
    rows = synthetic(seed=21, n_users=80, n_items=40, density=0.5)
    return [(u, i, float(np.clip(round(3 + 2 * (r - 3.5)), 1, 5))) for u, i, r in rows]


def test_predict_reads_a_userid_movieid_header_and_clips(run_recommend, tmp_path, capsys):
    ratings = write_csv(tmp_path / "r.csv", stretched_ratings())
    models = tmp_path / "models"
    assert run_recommend("train", "--ratings", ratings, "--model-dir", models, *FAST, "--force-publish") == 0
    _, arrays, attrs = published(models)
    assert attrs["rating_range"] == [1.0, 5.0]
    # The extremes of the unclipped scores: the user and item pairs of highest and lowest prediction.
    scores = (attrs["mu"] + arrays["user_bias"][:, None] + arrays["item_bias"][None, :]
              + arrays["user_factors"] @ arrays["item_factors"].T)
    high, low = np.unravel_index(scores.argmax(), scores.shape), np.unravel_index(scores.argmin(), scores.shape)
    assert scores.max() > 5 and scores.min() < 1, "the test needs predictions beyond the rating scale"
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("userId,movieId\n" + "".join(f"{arrays['user_ids'][u]},{arrays['item_ids'][i]}\n"
                                                  for u, i in (high, low)))
    for flag, want in (("--clip-predictions", [5.0, 1.0]), ("--no-clip-predictions", [scores.max(), scores.min()])):
        out = tmp_path / f"p{flag}.csv"
        assert run_recommend("predict", "--model-dir", models, "--pairs", pairs, "--out", out, flag) == 0
        assert "2 pairs: 0 with an unknown user, 0 with an unknown item" in capsys.readouterr().err
        lines = out.read_text().splitlines()
        assert len(lines) == 3
        np.testing.assert_allclose([float(line.split(",")[2]) for line in lines[1:]], want, rtol=1e-5)


def test_evaluate_and_recommend_report_clipped_values(run_recommend, tmp_path):
    rows = stretched_ratings()
    models = tmp_path / "models"
    assert run_recommend("train", "--ratings", write_csv(tmp_path / "r.csv", rows), "--model-dir", models, *FAST,
                         "--force-publish") == 0
    _, arrays, attrs = published(models)
    user_index = {str(u): n for n, u in enumerate(arrays["user_ids"])}
    item_index = {int(i): n for n, i in enumerate(arrays["item_ids"])}
    scores = (attrs["mu"] + arrays["user_bias"][:, None] + arrays["item_bias"][None, :]
              + arrays["user_factors"] @ arrays["item_factors"].T)
    heldout = [(u, i, 5.0) for u, i, _ in rows]
    truth = np.array([scores[user_index[u], item_index[i]] for u, i, _ in heldout])
    for flag, predicted in (("--clip-predictions", np.clip(truth, 1, 5)), ("--no-clip-predictions", truth)):
        metrics = tmp_path / f"eval{flag}.json"
        assert run_recommend("evaluate", "--model-dir", models, "--ratings", write_csv(tmp_path / "h.csv", heldout),
                             "--metrics", metrics, flag, "--overwrite") == 0
        result = json.loads(metrics.read_text())
        np.testing.assert_allclose(result["rmse"], np.sqrt(np.mean((5 - predicted) ** 2)), rtol=1e-9)
        np.testing.assert_allclose(result["mae"], np.mean(np.abs(5 - predicted)), rtol=1e-9)
    # recommend: every reported score is within the training range. The users file has a userId header.
    users = tmp_path / "users.csv"
    users.write_text("userId\n" + "".join(f"{u}\n" for u in arrays["user_ids"]))
    top = tmp_path / "top.csv"
    assert run_recommend("recommend", "--model-dir", models, "--users", users, "--top", 40, "--out", top) == 0
    reported = np.array([float(line.split(",")[3]) for line in top.read_text().splitlines()[1:]])
    assert len(reported) and reported.min() >= 1 and reported.max() <= 5 and (reported == 5).any()


# ---------------------------------------------------------------------------- the guardrail's baseline

def brute_baseline(users, items, values, n_users, n_items, reg_user, reg_item):
    """mu + b_u + b_i from the regularised normal equations, solved densely."""
    mu = values.mean()
    design = np.zeros((len(values), n_users + n_items))
    design[np.arange(len(values)), users] = 1
    design[np.arange(len(values)), n_users + items] = 1
    penalty = np.diag(np.r_[np.full(n_users, reg_user), np.full(n_items, reg_item)])
    biases = np.linalg.solve(design.T @ design + penalty, design.T @ (values - mu))
    return mu, biases[:n_users], biases[n_users:]


def test_fit_baseline_against_the_normal_equations():
    rng = np.random.default_rng(4)
    users, items = rng.integers(0, 30, 400), rng.integers(0, 25, 400)
    values = rng.integers(1, 6, 400).astype(float)
    got = fit_baseline(users, items, values, 32, 25, 15.0, 10.0, tol=1e-12, max_sweeps=10000)
    want = brute_baseline(users, items, values, 32, 25, 15.0, 10.0)
    assert got[0] == pytest.approx(want[0])
    np.testing.assert_allclose(got[1], want[1], atol=1e-9)
    np.testing.assert_allclose(got[2], want[2], atol=1e-9)
    assert got[1][30:].tolist() == [0.0, 0.0]  # users without ratings


def noisy_ratings(seed=8, n_users=300, n_items=150, density=0.3):
    """Integer ratings 1..5 of biases and noise only: a bias-only model is the truth, and the seed config's
    rank 100 at lambda 1e-4 (about 45 ratings per user) fits the noise."""
    rng = np.random.default_rng(seed)
    b_u, b_i = rng.normal(0, 0.4, n_users), rng.normal(0, 0.4, n_items)
    users, items = np.nonzero(rng.random((n_users, n_items)) < density)
    values = np.clip(np.round(3.5 + b_u[users] + b_i[items] + rng.normal(0, 1.0, len(users))), 1, 5)
    return [(f"u{u}", int(i), float(r)) for u, i, r in zip(users, items, values)]


def test_a_first_model_worse_than_the_baseline_is_refused_unless_forced(run_recommend, tmp_path, capsys):
    ratings = write_csv(tmp_path / "r.csv", noisy_ratings())
    seed_config = REPO / "configs" / "recommender-seed.toml"
    models, metrics = tmp_path / "models", tmp_path / "refused.json"
    common = ("train", "--config", seed_config, "--ratings", ratings, "--model-dir", models, "--max-steps", 10,
              "--metrics", metrics)
    status = run_recommend(*common)
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 3 and one_error_line(err), err
    assert "than the" in err[-1] and "of the bias-only baseline" in err[-1] and "no model is published" in err[-1]
    assert not (models / "latest").exists()
    result = json.loads(metrics.read_text())
    guard = result["guardrail"]
    assert guard["compared_with"] == "baseline" and not guard["passed"] and not result["published"]

    # The baseline's RMSE against the dense solution on the same split (validation: the 200 pairs of lowest
    # seeded key), clipped to the training range.
    data = read_ratings(ratings)
    u, i, r = data.users, data.items, data.values
    by_key = np.argsort(split_keys(u, i, len(data.item_ids), 0))
    train, validation = np.sort(by_key[400:]), by_key[:200]
    mu, b_u, b_i = brute_baseline(u[train], i[train], r[train], len(data.user_ids), len(data.item_ids), 15, 10)
    predicted = np.clip(mu + b_u[u[validation]] + b_i[i[validation]], r[train].min(), r[train].max())
    want = np.sqrt(np.mean((r[validation] - predicted) ** 2))
    np.testing.assert_allclose(guard["baseline_validation_rmse"], want, rtol=1e-6)
    assert guard["validation_rmse"] == result["validation"]["rmse"] > want + guard["tolerance"]

    assert run_recommend(*common, "--force-publish", "--overwrite") == 0
    assert "--force-publish: publishing although the validation RMSE" in capsys.readouterr().err
    assert json.loads(metrics.read_text())["guardrail"]["forced"]
    assert (models / "latest").read_text().strip() == "v0001"


def test_a_first_model_better_than_the_baseline_is_published(run_recommend, ratings_csv, tmp_path):
    metrics = tmp_path / "m.json"
    assert run_recommend("train", "--ratings", ratings_csv, "--model-dir", tmp_path / "models", *FAST,
                         "--metrics", metrics) == 0
    guard = json.loads(metrics.read_text())["guardrail"]
    assert guard["compared_with"] == "baseline" and guard["passed"] and not guard["forced"]
    assert guard["validation_rmse"] < guard["baseline_validation_rmse"]


@pytest.fixture(scope="module")
def ratings_csv(tmp_path_factory):
    return write_csv(tmp_path_factory.mktemp("ratings") / "ratings.csv", synthetic())


# ----------------------------------------------------------------------------------- jobs and logs

def test_log_lines_say_how_training_ended_in_words(run_recommend, ratings_csv, tmp_path, capsys):
    status = run_recommend("train", "--ratings", ratings_csv, "--model-dir", tmp_path / "m", *FAST,
                           "--max-steps", 3, "--patience", 10, "--test", 0)
    err = capsys.readouterr().err
    assert status == 0, err
    assert "stopped at max_steps 3 without converging" in err and "no test ratings" in err
    assert "None" not in err
    status = run_recommend("train", "--ratings", ratings_csv, "--model-dir", tmp_path / "m", *FAST,
                           "--max-steps", 2, "--validation", 0)
    err = capsys.readouterr().err
    assert status == 0, err
    assert "Iteration 2, Train Error: " in err and "(no validation ratings)" in err and "nan" not in err, err


@pytest.mark.parametrize("command, flag", [("train", "--ratings"), ("predict", "--pairs"),
                                           ("recommend", "--users"), ("evaluate", "--ratings")])
def test_a_folder_input_is_one_line_and_exit_status_2(run_recommend, tmp_path, capsys, command, flag):
    store = ModelStore(tmp_path / "models")
    store.publish(tiny_model((1.0, 5.0)))
    (tmp_path / "folder").mkdir()
    extra = ("--out", tmp_path / "out.csv") if command in ("predict", "recommend") else ()
    status = run_recommend(command, flag, tmp_path / "folder", "--model-dir", tmp_path / "models", *extra)
    err = capsys.readouterr().err.strip().splitlines()
    # train, predict and evaluate read a folder as a dataset of files (here none); recommend reads one file
    words = "is a folder" if command == "recommend" else "holds no ratings file"
    assert status == 2 and one_error_line(err) and words in err[-1], err
    assert not (tmp_path / "out.csv").exists()


def test_train_on_a_split_file_with_given_column_names(run_recommend, tmp_path, capsys):
    rows = synthetic(seed=2, n_users=120, n_items=60, density=0.4)
    path = tmp_path / "u1.base"
    path.write_text("stamp\tstars\tplace\tdiner\n" + "".join(f"0\t{r:.4f}\t{i}\t{u}\n" for u, i, r in rows))
    status = run_recommend("train", "--ratings", path, "--model-dir", tmp_path / "m", *FAST, "--user-col", "diner",
                           "--item-col", "place", "--rating-col", "stars")
    assert status == 0, capsys.readouterr().err
    _, arrays, _ = published(tmp_path / "m")
    assert len(arrays["user_ids"]) == 120 and str(arrays["user_ids"][0]).startswith("u")
