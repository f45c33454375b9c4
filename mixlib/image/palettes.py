"""Palettes as files: saved from a fit (``--palette-out``, a JSON file or a PNG swatch) and applied to an image
without fitting (``--palette``: a JSON file, a palette PNG, or any image whose distinct colours are the palette)."""

import dataclasses
import json

import numpy as np

from ..core.errors import InputError
from .colors import decode_colours
from .palette import Palette

PALETTE_FORMAT = "mixlib-palette"
MOST_ENTRIES = 256  # a palette file holds what a palette PNG can
SWATCH_SIDE = 32  # pixels of each entry's square in a PNG swatch
SWATCH_COLUMNS = 16


@dataclasses.dataclass(frozen=True)
class GivenPalette:
    """The 'fit' of a palette applied as given (``--palette``): the fits' summary protocol (``describe()``,
    ``summary(n_points)``), with no iteration."""

    entries: int
    source: str

    def describe(self):
        return f"the palette of {self.source}: {self.entries} colours, no fit"

    def summary(self, n_points):
        return {"iterations": 0, "converged": True, "palette_file": self.source}


def save_palette(path, colours):
    """Write palette entries ``(p, 3|4)`` uint8 to ``path``: ``.json`` (``{"format": "mixlib-palette", "colours":
    [[r, g, b(, a)], ...]}``) or ``.png`` (a swatch: a palette PNG of one square per entry, whose PLTE chunk is the
    palette in its order)."""
    from .writers import write_png

    if path.suffix.lower() == ".json":
        document = {"format": PALETTE_FORMAT, "version": 1, "colours": np.asarray(colours).tolist()}
        path.write_text(json.dumps(document) + "\n")
        return
    rows = -(-len(colours) // SWATCH_COLUMNS)
    columns = min(len(colours), SWATCH_COLUMNS)
    grid = np.full(rows * SWATCH_COLUMNS, len(colours) - 1, dtype=np.uint8)
    grid[:len(colours)] = np.arange(len(colours))
    squares = np.kron(grid.reshape(rows, SWATCH_COLUMNS)[:, :columns], np.ones((SWATCH_SIDE, SWATCH_SIDE), np.uint8))
    write_png(path, squares, colours, keep_order=True)


def load_palette(path):
    """Palette entries ``(p, 3|4)`` uint8 from a ``.json`` palette, a palette ('P') PNG (its PLTE entries, with
    their alpha), or any image of at most 256 distinct colours; InputError saying what is wrong."""
    if path.suffix.lower() == ".json":
        return _json_palette(path)
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            if image.mode == "P":
                return _pil_palette(image)
            from .readers import pillow_pixels

            pixels = pillow_pixels(path, image)
    except FileNotFoundError:
        raise InputError(f"--palette {path} does not exist") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise InputError(f"--palette {path} is not a palette file: give a .json palette, a palette PNG or an image "
                         f"of at most {MOST_ENTRIES} colours ({e})") from None
    colours = np.unique(pixels.reshape(-1, pixels.shape[2]), axis=0)
    if len(colours) > MOST_ENTRIES:
        raise InputError(f"--palette {path} has {len(colours)} distinct colours; a palette holds at most "
                         f"{MOST_ENTRIES}")
    return colours


def _json_palette(path):
    try:
        document = json.loads(path.read_text())
        colours = np.asarray(document["colours"])
        if document.get("format") != PALETTE_FORMAT:
            raise ValueError(f"its format is not {PALETTE_FORMAT!r}")
    except FileNotFoundError:
        raise InputError(f"--palette {path} does not exist") from None
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise InputError(f"--palette {path} is not a mixlib palette ({e})") from None
    if colours.ndim != 2 or colours.shape[1] not in (3, 4) or not 1 <= len(colours) <= MOST_ENTRIES \
            or colours.dtype.kind not in "iu" or colours.min() < 0 or colours.max() > 255:
        raise InputError(f"--palette {path}: expected 1 to {MOST_ENTRIES} colours of 3 or 4 values from 0 to 255")
    return colours.astype(np.uint8)


def _pil_palette(image):
    """The PLTE entries of a 'P' image, with their alpha from its tRNS chunk when it has one."""
    rgb = np.array(image.getpalette(), dtype=np.uint8).reshape(-1, 3)
    transparency = image.info.get("transparency")
    if transparency is None:
        return rgb
    alpha = np.full(len(rgb), 255, dtype=np.uint8)
    if isinstance(transparency, bytes):
        alpha[:len(transparency)] = np.frombuffer(transparency, dtype=np.uint8)[:len(rgb)]
    else:
        alpha[transparency] = 0
    return np.column_stack([rgb, alpha])


def apply_palette(codes, channels, colours, source):
    """The Palette that maps each distinct colour of an image (``codes``, ``channels``) to its nearest entry of
    ``colours`` ``(p, 3|4)`` (the first on a tie), the entries kept as given, in order, used or not. An RGB palette
    on an RGBA image is opaque; an RGBA palette on an RGB image is compared with opaque colours (and the output
    carries its alpha: a PNG's tRNS chunk)."""
    from ..fit.kmeans import nearest_centres

    entries = np.asarray(colours, dtype=np.uint8)
    if entries.shape[1] == 3 and channels == 4:
        entries = np.column_stack([entries, np.full(len(entries), 255, np.uint8)])
    image_colours = decode_colours(codes, channels).astype(np.float64)
    if entries.shape[1] == 4 and channels == 3:  # opaque colours: the entries that are not are far from them
        image_colours = np.column_stack([image_colours, np.full(len(image_colours), 255.0)])
    labels, _ = nearest_centres(image_colours, entries.astype(np.float64))
    dtype = np.uint8 if len(entries) <= MOST_ENTRIES else np.uint16
    return Palette(entries, labels.astype(dtype), GivenPalette(len(entries), str(source)))
