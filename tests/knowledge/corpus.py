"""A deterministic corpus for retrieval tests: documents with one unique fact each, and PDFs."""

from __future__ import annotations

import random
from dataclasses import dataclass

_SYLLABLES = "ka lo mi ve tor san quel bri dun fa gor hel ix jun mar nop os pra rul zet".split()  # noqa: SIM905
_FILLER = """the team reviewed the quarterly plan and agreed on the next milestones for delivery
engineers measured latency throughput and memory across several regions while the
operations group rotated credentials updated dashboards and wrote incident notes
customers asked for better exports clearer invoices and faster search in the portal
documentation was refreshed with diagrams examples and a glossary of common terms""".split()  # noqa: SIM905


@dataclass
class Fact:
    document: str  # file name
    question: str
    answer: str  # a string only the right chunk contains


def codename(rng: random.Random, used: set[str]) -> str:
    while True:
        name = "".join(rng.choice(_SYLLABLES) for _ in range(3)).capitalize()
        if name not in used:
            used.add(name)
            return name


def _filler(rng: random.Random, sentences: int) -> str:
    out = []
    for _ in range(sentences):
        words = [rng.choice(_FILLER) for _ in range(rng.randint(10, 18))]
        out.append(" ".join(words).capitalize() + ".")
    return " ".join(out)


def make_corpus(count: int = 200, seed: int = 18) -> tuple[dict[str, str], list[Fact]]:
    """count documents (Markdown and text, alternately) by file name, and one fact of each."""
    rng = random.Random(seed)
    used: set[str] = set()
    documents: dict[str, str] = {}
    facts: list[Fact] = []
    for number in range(count):
        name = codename(rng, used)
        code = f"{rng.choice('ABCDEFGH')}{rng.randint(1000, 9999)}"
        city = codename(rng, used)
        fact = f"The {name} project keeps its archive in {city} and its launch code is {code}."
        if number % 2 == 0:
            filename = f"doc-{number:03d}.md"
            text = (
                f"# Project {name}\n\n{_filler(rng, 3)}\n\n## Operations\n\n{_filler(rng, 2)}\n\n"
                f"## Facts\n\n{fact}\n\n## Notes\n\n{_filler(rng, 2)}\n"
            )
        else:
            filename = f"doc-{number:03d}.txt"
            text = f"{_filler(rng, 3)}\n\n{fact}\n\n{_filler(rng, 3)}\n"
        documents[filename] = text
        facts.append(Fact(filename, f"What is the launch code of the {name} project?", code))
    return documents, facts


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def make_pdf(pages: list[list[str]]) -> bytes:
    """A small valid PDF (Helvetica text, one line per string) built by hand."""
    objects: list[bytes] = []
    page_ids = [3 + 2 * i for i in range(len(pages))]
    font_id = 3 + 2 * len(pages)
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    kids = " ".join(f"{i} 0 R" for i in page_ids)
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {len(pages)} >>".encode())
    for index, lines in enumerate(pages):
        content_id = page_ids[index] + 1
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {content_id} 0 R "
            f"/Resources << /Font << /F1 {font_id} 0 R >> >> >>".encode()
        )
        ops = ["BT", "/F1 11 Tf", "14 TL", "50 740 Td"]
        for line in lines:
            ops.append(f"({_escape(line)}) Tj T*")
        ops.append("ET")
        stream = "\n".join(ops).encode("latin-1")
        objects.append(
            b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream"
        )
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    for offset in offsets:
        out += f"{offset:010d} 00000 n \n".encode()
    out += (
        f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    )
    return bytes(out)
