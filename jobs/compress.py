"""python -m jobs.compress: quantise an image to k colours by k-means on Dask."""

import sys

from mixlib.cli import parse_settings, run_job, setup_logging
from mixlib.cluster import connect
from mixlib.compress import CompressSettings, plan, run

DESCRIPTION = ("Quantise an RGB(A) image to k colours by k-means on a Dask cluster. Every option can also be "
               "set in the TOML config file; a flag beats the file.")


def main(argv=None):
    def body():
        settings = parse_settings(CompressSettings, "compress", argv, DESCRIPTION, positional="input")
        setup_logging(settings.log_level)
        job_plan = plan(settings)
        with connect(settings) as client:
            run(settings, job_plan, client)

    return run_job(body)


if __name__ == "__main__":
    sys.exit(main())
