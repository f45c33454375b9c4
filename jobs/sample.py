"""python -m jobs.sample: draw a new image from a Gaussian mixture fitted by jobs.compress --method gmm."""

import sys

from mixlib.cli import parse_settings, run_job, setup_logging
from mixlib.cluster import connect
from mixlib.sample import SampleSettings, plan, run

DESCRIPTION = ("Draw every pixel of a new image independently from a Gaussian mixture, chunk-parallel on a Dask "
               "cluster. Every option can also be set in the TOML config file; a flag beats the file.")


def main(argv=None):
    def body():
        settings = parse_settings(SampleSettings, "sample", argv, DESCRIPTION)
        setup_logging(settings.log_level)
        job_plan = plan(settings)
        with connect(settings) as client:
            run(settings, job_plan, client)

    return run_job(body)


if __name__ == "__main__":
    sys.exit(main())
