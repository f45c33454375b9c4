"""python -m jobs.compress: quantise an image to k colours by k-means or a Gaussian mixture on Dask."""

import sys

from mixlib.core.cli import job_main
from mixlib.image.compress import CompressSettings, plan, run, runs_here, worker_paths

DESCRIPTION = ("Quantise an RGB(A) image to k colours by k-means or a Gaussian mixture on a Dask cluster. Every "
               "option can also be set in the TOML config file; a flag beats the file.")

main = job_main(CompressSettings, "compress", DESCRIPTION, plan, run, positional="input", worker_paths=worker_paths,
                runs_here=runs_here)

if __name__ == "__main__":
    sys.exit(main())
