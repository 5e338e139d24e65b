"""Adds the fast tier's cases of 5 s or more to `tests/slow_cases.txt`, from the JUnit XML of a
fast-tier run (`python -m pytest -n 2 -q --junitxml=fast.xml` in a fresh clone, as CI runs it):

    python tests/retier.py fast.xml [--min-seconds 5] [--note "fresh clone of <rev>, <date>"]

`tests/conftest.py` marks the listed cases slow, so that `.ci/run` runs them after the README's
command; the list is data, kept sorted, each entry with the seconds it took where it was added.
Entries are only added: a case that got cheaper is taken out by hand (or the list rebuilt).
Doctests (`jaxdiv/`) stay in the fast tier.
"""

from __future__ import annotations

import argparse
import pathlib
import xml.etree.ElementTree as ET

LIST = pathlib.Path(__file__).resolve().parent / "slow_cases.txt"


def node_id(classname: str, name: str) -> str | None:
  """pytest's node id of a JUnit test case of `tests/` (None for a doctest)."""
  if not classname.startswith("tests."):
    return None
  return classname.replace(".", "/") + ".py::" + name


def read_list(path: pathlib.Path = LIST) -> dict[str, str]:
  """{node id: the line's comment} of the list (comment lines and blank lines skipped)."""
  entries = {}
  if path.exists():
    for line in path.read_text().splitlines():
      if line.strip() and not line.startswith("#"):
        nid, _, note = line.partition("  # ")
        entries[nid.strip()] = note.strip()
  return entries


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("junit_xml")
  parser.add_argument("--min-seconds", type=float, default=5.0)
  parser.add_argument("--note", default="")
  args = parser.parse_args(argv)
  entries = read_list()
  header = [line for line in (LIST.read_text().splitlines() if LIST.exists() else [])
            if line.startswith("#")]
  added = 0
  for case in ET.parse(args.junit_xml).getroot().iter("testcase"):
    nid = node_id(case.get("classname", ""), case.get("name", ""))
    seconds = float(case.get("time", 0))
    if nid and seconds >= args.min_seconds and nid not in entries:
      entries[nid] = f"{seconds:.1f} s" + (f", {args.note}" if args.note else "")
      added += 1
  lines = header + [f"{nid}  # {note}" for nid, note in sorted(entries.items())]
  LIST.write_text("\n".join(lines) + "\n")
  print(f"{added} added, {len(entries)} listed in {LIST}")


if __name__ == "__main__":
  main()
