"""The benchmark's workload: a web build of realistic sizes, its templated files, and customers.

A build is a few hundred files, mostly small (pages, scripts, stylesheets, images, fonts) with a few
large ones (a vendor bundle, a source map, a video, a PDF), all deterministic from a seed so that every
tool and every run copies exactly the same bytes. 5 % of the files are templates that webrelease
renders per customer (the peers can only copy them as they are). ``v2`` of the build differs from
``v1`` in exactly one file, whose size changes (so that every size+time based sync tool notices).
"""

from __future__ import annotations

import base64
import math
import random
from dataclasses import dataclass

#: (kind, share of the build, extension, median size, min, max) — sizes in bytes.
_KINDS: tuple[tuple[str, float, str, int, int, int], ...] = (
    ("page", 0.12, "html", 12_000, 2_000, 80_000),
    ("script", 0.22, "js", 15_000, 1_000, 600_000),
    ("style", 0.08, "css", 10_000, 1_000, 150_000),
    ("image", 0.45, "png", 8_000, 300, 400_000),
    ("font", 0.05, "woff2", 40_000, 15_000, 90_000),
    ("data", 0.08, "json", 1_000, 100, 20_000),
)
#: The few large files of a real build.
_LARGE: tuple[tuple[str, int], ...] = (
    ("assets/vendor.bundle.js", 1_400_000),
    ("assets/app.bundle.js.map", 3_200_000),
    ("media/intro.mp4", 5_500_000),
    ("docs/handbook.pdf", 2_100_000),
)
_TEXT = {"html", "js", "css", "json"}
_SECTIONS = ("docs", "blog", "app", "help")
_IMAGES = (("icon", "png"), ("photo", "jpg"), ("banner", "webp"), ("thumb", "svg"))
TEMPLATE_SHARE = 0.05


@dataclass(frozen=True, slots=True)
class BuildFile:
    key: str
    size: int
    templated: bool
    seed: int

    @property
    def is_text(self) -> bool:
        return self.key.rsplit(".", 1)[-1] in _TEXT

    def body(self, version: int = 1) -> bytes:
        """The file's bytes; a template carries placeholders for the customer's fields."""
        rng = random.Random(self.seed * 31 + version)
        size = self.size if version == 1 else self.size + 37 * (version - 1)
        if not self.is_text:
            return rng.randbytes(size)
        head = template_header(self.key) if self.templated else b""
        # base64 text: no braces, so nothing in the filler looks like template syntax
        filler = base64.b64encode(rng.randbytes(max(0, size - len(head)) * 3 // 4 + 3))
        return head + filler[: max(0, size - len(head))]


def template_header(key: str) -> bytes:
    """A few placeholders on the customer record (Jinja2, as webrelease renders them; ``json`` is
    its JS-safe filter)."""
    if key.endswith(".html"):
        return b"<title>{{ name }}</title><meta name='customer' content='{{ id }}'>\n"
    if key.endswith(".js"):
        return b"window.SETTINGS = {{ settings | json }};\n//"
    return b'{"customer": {{ id | json }}, "theme": {{ color | json }}, "pad": "'


@dataclass(frozen=True, slots=True)
class Build:
    files: tuple[BuildFile, ...]
    #: The one file that differs between v1 and v2.
    changed_key: str

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def templates(self) -> tuple[BuildFile, ...]:
        return tuple(f for f in self.files if f.templated)

    def version(self, v: int) -> dict[str, bytes]:
        return {f.key: f.body(v if f.key == self.changed_key else 1) for f in self.files}


def _lognormal(rng: random.Random, median: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, int(rng.lognormvariate(math.log(median), 1.1))))


def make_build(files: int, seed: int = 20261128) -> Build:
    """``files`` files: the large ones, the rest spread over the kinds by their share."""
    rng = random.Random(seed)
    out: list[BuildFile] = []
    large = _LARGE[: max(1, min(len(_LARGE), files // 60))]
    for key, size in large:
        out.append(BuildFile(key, size, False, rng.randrange(1 << 30)))
    rest = files - len(out)
    counts = [max(1, round(rest * share)) for _, share, *_ in _KINDS]
    counts[3] += rest - sum(counts)  # images take up the rounding
    for (kind, _share, ext, median, lo, hi), count in zip(_KINDS, counts, strict=True):
        for i in range(count):
            if kind == "page":
                key = "index.html" if i == 0 else f"{_SECTIONS[i % 4]}/page-{i:03d}.html"
            elif kind == "image":
                key = f"assets/img/{_IMAGES[i % 4][0]}-{i:03d}.{_IMAGES[i % 4][1]}"
            elif kind == "data":
                key = f"data/{i:03d}.json"
            else:
                key = f"assets/{kind}-{i:03d}.{rng.randrange(1 << 32):08x}.{ext}"
            out.append(BuildFile(key, _lognormal(rng, median, lo, hi), False, rng.randrange(1 << 30)))
    # 5 % templated: the home page, a config script, and pages/data files.
    n_templates = max(1, math.ceil(files * TEMPLATE_SHARE))
    out.append(BuildFile("config.js", 600, True, rng.randrange(1 << 30)))
    candidates = [i for i, f in enumerate(out) if f.key.endswith((".html", ".json"))]
    candidates.sort(key=lambda i: (out[i].key != "index.html", out[i].key))
    for i in candidates[: n_templates - 1]:
        f = out[i]
        out[i] = BuildFile(f.key, min(f.size, 30_000), True, f.seed)
    out = out[:files]
    if not any(f.key == "config.js" for f in out):  # tiny builds: keep the config template
        out[-1] = BuildFile("config.js", 600, True, rng.randrange(1 << 30))
    out.sort(key=lambda f: f.key)
    changed = next(f.key for f in out if f.key.endswith(".js") and not f.templated and f.size < 200_000)
    return Build(tuple(out), changed)


def make_customers(n: int) -> list[dict[str, object]]:
    return [
        {
            "id": f"customer-{i:05d}",
            "name": f"Customer {i}",
            "color": f"#{(i * 2654435761) % 0xFFFFFF:06x}",
            "settings": {"apiUrl": f"https://api.example.com/c/{i}", "features": ["a", "b"][: 1 + i % 2]},
        }
        for i in range(n)
    ]
