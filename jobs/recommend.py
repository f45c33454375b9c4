"""python -m jobs.recommend {train,predict,recommend,evaluate}: an ALS recommender on Dask."""

import dataclasses
import sys

from mixlib import __version__
from mixlib.core.cli import job_main
from mixlib.recsys import serve, settings, train

COMMANDS = {
    "train": (settings.TrainSettings, train.plan_train, train.run_train, train.train_runs_here,
              "Train a matrix-factorisation model by ALS on a Dask cluster and publish it as the model store's "
              "new 'latest' version.", train.train_worker_paths),
    "predict": (settings.PredictSettings, serve.plan_predict, serve.run_predict, serve.predict_runs_here,
                "Predict the rating of user,item pairs with the published model.", serve.predict_worker_paths),
    "recommend": (settings.RecommendSettings, serve.plan_recommend, serve.run_recommend, serve.recommend_runs_here,
                  "Write the top-N unseen items of users with the published model.", serve.recommend_worker_paths),
    "evaluate": (settings.EvaluateSettings, serve.plan_evaluate, serve.run_evaluate, serve.evaluate_runs_here,
                 "RMSE and MAE (and precision@N, recall@N) of the published model on held-out ratings.",
                 serve.evaluate_worker_paths),
}
USAGE = ("usage: python -m jobs.recommend {train,predict,recommend,evaluate} [options]; "
         "python -m jobs.recommend COMMAND --help describes the options; --version prints mixlib's version")


def _keys(settings_class):
    return {f.name for f in dataclasses.fields(settings_class)}


def _command(name):
    """One subcommand; configs/recommender.toml may also hold the keys of the others."""
    settings_class, plan, run, runs_here, description, worker_paths = COMMANDS[name]
    others = set().union(*(_keys(c[0]) for c in COMMANDS.values())) - _keys(settings_class)
    description += " Every option can also be set in the TOML config file; a flag beats the file."
    return job_main(settings_class, f"recommend {name}", description, plan, run, config_name="recommender",
                    other_keys=others, runs_here=runs_here, worker_paths=worker_paths)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    if argv and argv[0] == "--version":
        print(f"mixlib {__version__}")  # as every command's --version
        return 0
    if not argv or argv[0] not in COMMANDS:
        print(f"error: {'unknown command ' + repr(argv[0]) if argv else 'no command given'}; {USAGE}",
              file=sys.stderr)
        return 2
    return _command(argv[0])(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
