"""MkDocs hooks: the README is the site's home page, and links work both on GitHub and in the site.

On GitHub the README links to ``docs/guide/runs.md`` and a page under ``docs/`` links back to
``../README.md`` (or ``../../README.md``). In the site the README becomes ``index.md`` at the top of
``docs/``, so its ``docs/`` prefix is dropped and a page's link to the README points at ``index.md``.
"""

from __future__ import annotations

import re
from pathlib import Path

from mkdocs.structure.files import File

README = "README.md"
_TO_README = re.compile(r"(\]\(|\]: )\.\./((?:\.\./)*)README\.md")  # one '../' more than the page is deep
_FROM_README = re.compile(r"(\]\(|\]: )docs/")


def on_files(files, config):
    readme = Path(config["config_file_path"]).parent / README
    files.append(File.generated(config, "index.md", abs_src_path=str(readme)))
    return files


def on_page_markdown(markdown, page, config, files):
    if page.file.src_uri == "index.md":
        return _FROM_README.sub(r"\1", markdown)
    return _TO_README.sub(r"\1\2index.md", markdown)
