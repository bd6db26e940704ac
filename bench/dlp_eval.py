"""Detection quality of the built-in DLP catalog on public corpora.

Reads the corpora from ``../shared/corpora`` relative to the repository root
(never copied into the project) and prints Markdown tables:

1. Secrets: ``secrets/noseyparker_examples.json`` (Nosey Parker's rule
   examples). A positive example counts as detected when the scan of the
   example yields at least one finding of any pattern; a negative example is
   a false positive when it yields any finding. Precision and recall, overall,
   over the rule families the built-in catalog targets, and per family (the
   rule id without its number: ``np.aws.2`` -> ``aws``). Negative examples of
   one rule are sometimes positives of a sibling rule (``np.slack.2``'s
   negatives are the user tokens ``np.slack.4`` lists as positives): a finding
   there is a correct detection by our catalog, counted as a false positive
   all the same.
2. PII: ``pii/presidio_synth_dataset_v2.json``. Per labelled entity type,
   span-level recall: a labelled span is found when a finding overlaps it.
   Per built-in PII pattern, precision: a finding is correct when it overlaps
   a labelled span of a covered type. Then the findings in these texts that
   overlap no labelled span of a covered type (the corpus as a benign-ish
   corpus), per pattern.

    python -m bench.dlp_eval [--corpora DIR]
"""

import argparse
import collections
import json
import os
import time

from gateway.engine.dlp.scanner import compile_scanner

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CORPORA = os.path.join(ROOT, "..", "shared", "corpora")

# Nosey Parker rule families the built-in catalog is meant to detect.
COVERED_FAMILIES = {
    "anthropic", "artifactory", "atlassian", "aws", "azure", "databricks", "digitalocean", "doppler",
    "dockerhub", "generic", "github", "gitlab", "google", "groq", "huggingface", "http", "jwt", "mailchimp",
    "mailgun", "mongodb", "newrelic", "npm", "nuget", "odbc", "openai", "pem", "postgres", "postman", "pypi",
    "rubygems", "sendgrid", "shopify", "slack", "sourcegraph", "square", "stripe", "tavily", "telegram",
    "twilio", "age", "hashicorp", "grafana",
}
# Presidio entity types the built-in catalog covers, and the pattern for each.
PII_TYPES = {
    "CREDIT_CARD": "builtin.credit-card",
    "IBAN_CODE": "builtin.iban",
    "US_SSN": "builtin.us-ssn",
    "EMAIL_ADDRESS": "builtin.email",
    "PHONE_NUMBER": "builtin.phone-number",
}


def _ratio(num, den):
    return f"{num / den:.3f}" if den else "n/a"


def family(rule_id):
    parts = rule_id.split(".")
    return parts[1] if len(parts) > 2 else rule_id


def eval_secrets(scanner, path):
    rules = json.load(open(path, encoding="utf-8"))["rules"]
    counts = collections.defaultdict(lambda: [0, 0, 0, 0])    # tp, fn, fp, tn
    misses = []
    for rule in rules:
        c = counts[family(rule["id"])]
        for example in rule["examples"]:
            found = bool(scanner.scan(example, "prompt"))
            c[0 if found else 1] += 1
            if not found:
                misses.append(rule["id"])
        for example in rule["negative_examples"]:
            c[2 if scanner.scan(example, "prompt") else 3] += 1
    return counts, misses


def secrets_table(counts):
    lines = ["| rule family | positives | detected | negatives | flagged | precision | recall |",
             "|---|---:|---:|---:|---:|---:|---:|"]

    def row(name, tp, fn, fp, tn):
        return (f"| {name} | {tp + fn} | {tp} | {fp + tn} | {fp} | {_ratio(tp, tp + fp)} | "
                f"{_ratio(tp, tp + fn)} |")

    for label, keep in (("**all rules**", lambda f: True),
                        ("**families the catalog targets**", lambda f: f in COVERED_FAMILIES),
                        ("**other families**", lambda f: f not in COVERED_FAMILIES)):
        total = [sum(counts[f][i] for f in counts if keep(f)) for i in range(4)]
        lines.append(row(label, *total))
    for name in sorted(counts):
        mark = "" if name in COVERED_FAMILIES else " (not targeted)"
        lines.append(row(name + mark, *counts[name]))
    return "\n".join(lines)


def _overlaps(a_start, a_end, b_start, b_end):
    return a_start < b_end and b_start < a_end


def eval_pii(scanner, path):
    records = json.load(open(path, encoding="utf-8"))
    labelled = collections.Counter()
    found = collections.Counter()
    per_pattern = collections.defaultdict(lambda: [0, 0])      # correct, incorrect
    benign = collections.Counter()
    for record in records:
        text = record["full_text"]
        spans = [(s["entity_type"], s["start_position"], s["end_position"]) for s in record["spans"]]
        findings = scanner.scan(text, "prompt")
        for etype, start, end in spans:
            labelled[etype] += 1
            if any(_overlaps(f.start, f.end, start, end) for f in findings):
                found[etype] += 1
        for f in findings:
            correct = any(etype in PII_TYPES and _overlaps(f.start, f.end, s, e) for etype, s, e in spans)
            per_pattern[f.pattern_id][0 if correct else 1] += 1
            if not correct:
                benign[f.pattern_id] += 1
    return len(records), labelled, found, per_pattern, benign


def pii_tables(n_texts, labelled, found, per_pattern, benign):
    lines = ["| entity type | labelled spans | found | recall | built-in pattern | findings | correct | precision |",
             "|---|---:|---:|---:|---|---:|---:|---:|"]
    for etype, pid in PII_TYPES.items():
        correct, wrong = per_pattern.get(pid, [0, 0])
        lines.append(f"| {etype} | {labelled[etype]} | {found[etype]} | {_ratio(found[etype], labelled[etype])} | "
                     f"`{pid}` | {correct + wrong} | {correct} | {_ratio(correct, correct + wrong)} |")
    tc = sum(per_pattern[p][0] for p in per_pattern)
    tw = sum(per_pattern[p][1] for p in per_pattern)
    tl = sum(labelled[t] for t in PII_TYPES)
    tf = sum(found[t] for t in PII_TYPES)
    lines.append(f"| **covered types** | {tl} | {tf} | {_ratio(tf, tl)} | all patterns | {tc + tw} | {tc} | "
                 f"{_ratio(tc, tc + tw)} |")
    others = [t for t in sorted(labelled) if t not in PII_TYPES]
    lines += ["", "Entity types the catalog does not target (overlap by any finding, for information):", "",
              "| entity type | labelled spans | overlapped by a finding |", "|---|---:|---:|"]
    lines += [f"| {t} | {labelled[t]} | {found[t]} |" for t in others]
    lines += ["", f"Findings in the {n_texts} PII texts that overlap no labelled span of a covered type "
              f"(benign-ish corpus): {sum(benign.values())}", ""]
    if benign:
        lines += ["| pattern | findings |", "|---|---:|"]
        lines += [f"| `{p}` | {n} |" for p, n in benign.most_common()]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpora", default=DEFAULT_CORPORA)
    parser.add_argument("--misses", action="store_true", help="list the secret rules with undetected examples")
    args = parser.parse_args()
    scanner = compile_scanner(True, [])
    started = time.perf_counter()
    counts, misses = eval_secrets(scanner, os.path.join(args.corpora, "secrets", "noseyparker_examples.json"))
    print("## Secrets: Nosey Parker rule examples\n")
    print(secrets_table(counts))
    if args.misses:
        print("\nUndetected examples per rule:", dict(collections.Counter(misses)))
    print("\n## PII: Presidio synthetic dataset v2\n")
    print(pii_tables(*eval_pii(scanner, os.path.join(args.corpora, "pii", "presidio_synth_dataset_v2.json"))))
    print(f"\n(evaluated in {time.perf_counter() - started:.1f} s)")


if __name__ == "__main__":
    main()
