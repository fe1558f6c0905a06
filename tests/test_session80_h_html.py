"""``transferkit report``'s report.html and report.md read as documents (session 80's audit): the page
parses as well-formed HTML5 (every element closed and nested, doctype, lang, charset, title, headings
in order, no address off the machine, alt text on every image) with column headers scoped and every
name from the data escaped; a stopped or failed run says so at the top of both files; the markdown's
figure notes are a paragraph each with names escaped, its config fence outlasts backticks in a value,
and an image's alt text keeps to one line with its markup escaped.

Results files are written by hand and figures replaced by the stub PNG of the ``figures`` fixture."""

import json
import re
from html.parser import HTMLParser

import transferkit.report as report

EVIL = "<script>alert('x')</script> & \"q\" |p"
ROW = {"method": "m", "source": "s", "target": "t", "setting": "k=1", "seed": 0, "accuracy": 0.5, "wall_s": 1.0}
VOID = {"meta", "img", "br", "hr", "link", "input", "col", "source", "wbr"}


class _Page(HTMLParser):
    """Open elements, nesting errors, headings, images, column headers and the text of a page."""

    def __init__(self):
        super().__init__()
        self.open, self.errors, self.headings, self.images, self.headers, self.starts = [], [], [], [], [], []
        self.doctype, self.text = None, []

    def handle_decl(self, decl):
        self.doctype = decl

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.starts.append((tag, attrs))
        if tag == "img":
            self.images.append(attrs)
        if tag == "th":
            self.headers.append(attrs)
        if re.fullmatch(r"h[1-6]", tag):
            self.headings.append(int(tag[1]))
        if tag not in VOID:
            self.open.append(tag)

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.open or self.open[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.open[-1:]}")
        else:
            self.open.pop()

    def handle_data(self, data):
        self.text.append(data)


def _parse(page: str) -> _Page:
    parsed = _Page()
    parsed.feed(page)
    parsed.close()
    return parsed


def _run(tmp_path, rows, **data):
    run = tmp_path / "run"
    run.mkdir(exist_ok=True)
    (run / "results.json").write_text(json.dumps({"config": {}, "rows": rows, **data}))
    return run


def test_the_page_is_well_formed_html5_with_scoped_headers_and_every_name_escaped(tmp_path, figures):
    rows = [{**ROW, "method": EVIL, "seed": s, "accuracy": 0.5 + s / 10, "class_names": [EVIL, "b"],
             "confusion": [[1, 0], [0, 1]], "per_class_accuracy": [1.0, 1.0]} for s in (0, 1)]
    run = _run(tmp_path, rows, name=EVIL, config={"name": EVIL, "note": "a & b"})
    page = report.write_report(run)[0].read_text()
    parsed = _parse(page)
    assert parsed.doctype.lower() == "doctype html" and not parsed.errors and not parsed.open, parsed.errors
    tags = [t for t, _ in parsed.starts]
    assert tags[:2] == ["html", "head"] and dict(parsed.starts[0][1]).get("lang") == "en"
    assert ("meta", {"charset": "utf-8"}) in parsed.starts and tags.count("title") == 1
    assert parsed.headings[0] == 1 and all(b - a <= 1 for a, b in zip(parsed.headings, parsed.headings[1:]))
    assert parsed.images and all(i.get("alt", "").strip() for i in parsed.images)
    assert parsed.headers and all(h.get("scope") == "col" for h in parsed.headers)
    assert not re.search(r"(?:src|href)=\"(?:https?:)?//", page) and "http" not in page
    assert tags.count("script") == 1  # the page's own image check, none from a name
    text = "".join(parsed.text)
    assert text.count(EVIL) >= 4  # title, heading, table cell, config: shown as text


def test_a_stopped_run_says_so_at_the_top_of_both_files(tmp_path, figures):
    run = tmp_path / "stopped"
    (run / "jobs").mkdir(parents=True)
    (run / "config.yaml").write_text("name: stopped\nk: 1\nratio: null\n")
    (run / "jobs" / "m-k=1-s0.json").write_text(json.dumps(ROW))
    page, md = (p.read_text() for p in report.write_report(run))
    assert page.index("<p>The run is not finished") < page.index("<h2>Results</h2>") < page.index("<table")
    assert md.index("The run is not finished") < md.index("1 results;") < md.index("| method |")


def test_a_run_with_failed_jobs_names_them_at_the_top_and_their_errors_under_the_table(tmp_path, figures):
    failed = [{"job": "boom<b> seed 0", "error": "ValueError: x", "traceback": "failed/boom-k=1-s0.txt"}]
    run = _run(tmp_path, [ROW], name="r", failed=failed)
    page, md = (p.read_text() for p in report.write_report(run))
    top = "1 job(s) failed and have no row in the table: boom&lt;b&gt; seed 0 (their errors are under the table)."
    assert page.index(f"<p>{top}</p>") < page.index("<table") < page.index("<p>failed: job boom&lt;b&gt; seed 0")
    assert md.index("1 job(s) failed and have no row in the table: boom\\<b\\> seed 0") < md.index("| method |") \
        < md.index("failed: job boom\\<b\\> seed 0")


def test_markdown_figure_notes_are_paragraphs_with_names_escaped(tmp_path, figures):
    run = _run(tmp_path, [ROW])
    outside = tmp_path / "elsewhere.png"
    outside.write_bytes(b"png")
    (run / "a<b>.png").symlink_to(outside)  # a note naming it
    for i in range(report.MAX_FIGURES + 1):  # a note counting the one left out
        (run / f"f{i:02d}.png").write_bytes(b"png")
    md = report.write_report(run)[1].read_text()
    assert "\n\n1 figures not shown: symbolic links out of the run directory (a\\<b\\>.png).\n\n" in md
    assert "\n\n1 more saved figures not shown (the report draws 24).\n\n## Configuration" in md


def test_markdown_config_fence_outlasts_backticks_in_a_value_and_alt_text_keeps_to_one_line(tmp_path, figures):
    row = {**ROW, "setting": "k=1\n## not a heading", "class_names": ["a", "b"], "confusion": [[1, 0], [0, 1]]}
    run = _run(tmp_path, [row], config={"note": "```\n# not yaml\n````"})
    md = report.write_report(run)[1].read_text()
    block = md.split("## Configuration\n\n", 1)[1]
    assert block.startswith("`````yaml\n") and block.endswith("\n`````\n") and "  ````'\n`````" in block
    alts = re.findall(r"!\[([^\n]*?)\]\(report_files/figure\d+\.png\)", md)
    assert len(alts) == md.count("](report_files/figure") and any("k=1 ## not a heading" in a for a in alts), alts


def test_an_entity_in_a_name_stays_text_in_markdown_and_results_md_escapes_its_title(tmp_path, figures):
    from transferkit.results import write_results
    from transferkit.tables import md_cell
    assert md_cell("a &lt; b") == "a \\&lt; b" and md_cell("&#60;") == "\\&#60;" and md_cell("R&D & co") == "R&D & co"
    run = _run(tmp_path, [{**ROW, "method": "a&lt;b"}])
    assert "| a\\&lt;b | s | t | k=1 |" in report.write_report(run)[1].read_text()
    write_results(tmp_path / "r", "x<b>|y", {}, [ROW])
    assert (tmp_path / "r" / "results.md").read_text().startswith("# x\\<b\\>\\|y\n\n| method |")


def test_markdown_alt_text_escapes_the_markup_of_a_name(tmp_path, figures):
    row = {**ROW, "target": "t*x* `c` <b>[1]", "class_names": ["a", "b"], "confusion": [[1, 0], [0, 1]]}
    md = report.write_report(_run(tmp_path, [row]))[1].read_text()
    assert "![Confusion matrices, s → t\\*x\\* \\`c\\` \\<b\\>\\[1\\] (k=1);" in md
