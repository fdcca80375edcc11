"""Write the built-in tiny knowledge base ``src/pasodoble/assets/tiny_knowledge.jsonl``.

About 60 short snippets on integer arithmetic (facts, worked examples with their result, and
explanations), generated deterministically from a fixed seed so the committed file can be checked:
``python scripts/make_tiny_knowledge.py --check`` fails when the file differs from what this script
writes. Each line is ``{"id": "tiny-NN", "text": ...}``; the knowledge base reads the ``text`` field.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "src" / "pasodoble" / "assets" / "tiny_knowledge.jsonl"

FACTS = [
    "The sum of two even integers is even, and the sum of two odd integers is also even.",
    "The sum of an even integer and an odd integer is odd.",
    "The product of two integers is odd only when both factors are odd.",
    "Adding zero to an integer leaves it unchanged; multiplying an integer by one leaves it unchanged.",
    "Multiplying any integer by zero gives zero.",
    "Addition and multiplication of integers are commutative: a + b = b + a and a * b = b * a.",
    "Multiplication distributes over addition: a * (b + c) = a * b + a * c.",
    "Subtracting a larger integer from a smaller one gives a negative result, for example 3 - 8 = -5.",
    "The product of two negative integers is positive, and the product of a negative and a positive "
    "integer is negative.",
    "An integer is divisible by 3 exactly when the sum of its decimal digits is divisible by 3.",
    "An integer is divisible by 9 exactly when the sum of its decimal digits is divisible by 9.",
    "An integer is divisible by 5 exactly when its last digit is 0 or 5.",
    "An integer is divisible by 4 exactly when the number formed by its last two digits is divisible by 4.",
    "Integer division of a by b gives a quotient q and a remainder r with a = b * q + r and 0 <= r < b.",
    "A prime number is an integer greater than 1 whose only positive divisors are 1 and itself.",
    "The greatest common divisor of two integers does not change when the smaller is subtracted "
    "from the larger.",
    "The square of an odd integer leaves remainder 1 when divided by 8.",
    "The sum of the first n positive integers is n * (n + 1) / 2.",
    "The sum of the first n odd positive integers is n squared.",
    "The last digit of a product depends only on the last digits of its factors.",
]

EXPLANATIONS = [
    "To add two numbers in your head, split one of them into tens and ones: 47 + 38 = 47 + 30 + 8 = 85.",
    "Multiplying by 5 is the same as multiplying by 10 and halving: 5 * 64 = 640 / 2 = 320.",
    "Multiplying by 11 a two-digit number: write the sum of its digits between them, carrying if "
    "needed: 11 * 36 = 396.",
    "To subtract 99, subtract 100 and add 1: 452 - 99 = 352 + 1 = 353.",
    "A product of consecutive integers n * (n + 1) is always even because one factor is even.",
    "The Euclidean algorithm finds a greatest common divisor by repeated division: "
    "gcd(84, 36) = gcd(36, 12) = gcd(12, 0) = 12.",
    "The least common multiple of a and b equals a * b divided by their greatest common divisor: "
    "lcm(4, 6) = 24 / 2 = 12.",
    "Order of operations: multiplication and division come before addition and subtraction, "
    "so 2 + 3 * 4 = 14, while (2 + 3) * 4 = 20.",
    "Squares near a round number: 49 * 49 = (50 - 1)^2 = 2500 - 100 + 1 = 2401.",
    "A difference of squares factors as a^2 - b^2 = (a - b)(a + b), so 23 * 17 = 20^2 - 3^2 = 391.",
]


def worked_examples(rng: random.Random) -> list[str]:
    """Thirty worked examples with their results, six of each kind."""
    out: list[str] = []
    for _ in range(6):
        a, b = rng.randint(12, 499), rng.randint(12, 499)
        out.append(
            f"Worked example: {a} + {b}. Add the ones, then the tens, then the hundreds: {a} + {b} = {a + b}."
        )
    for _ in range(6):
        a, b = rng.randint(100, 999), rng.randint(10, 99)
        out.append(f"Worked example: {a} - {b} = {a - b}. Check by adding back: {a - b} + {b} = {a}.")
    for _ in range(6):
        a, b = rng.randint(3, 29), rng.randint(11, 19)
        out.append(
            f"Worked example: {a} * {b}. Split {b} into tens and ones: "
            f"{a} * {b - b % 10} + {a} * {b % 10} = {a * (b - b % 10)} + {a * (b % 10)} = {a * b}."
        )
    for _ in range(6):
        b, q = rng.randint(3, 12), rng.randint(5, 60)
        r = rng.randint(0, b - 1)
        a = b * q + r
        out.append(
            f"Worked example: dividing {a} by {b} gives quotient {q} and remainder {r}, since {b} * {q} + {r} = {a}."
        )
    for _ in range(6):
        n = rng.randint(2, 25)
        out.append(
            f"Worked example: the sum 1 + 2 + ... + {n} equals {n} * {n + 1} / 2 = {n * (n + 1) // 2}."
        )
    return out


def snippets(seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    texts = FACTS + EXPLANATIONS + worked_examples(rng)
    rng.shuffle(texts)
    return texts


def render(seed: int = 0) -> str:
    return "".join(
        json.dumps({"id": f"tiny-{i:02d}", "text": t}, ensure_ascii=False) + "\n"
        for i, t in enumerate(snippets(seed))
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help="output path (default: the package asset)")
    parser.add_argument("--check", action="store_true", help="only check that --out is up to date")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.out.read_text(encoding="utf-8") if args.out.exists() else None
        if current != text:
            print(f"{args.out} is out of date; run python scripts/make_tiny_knowledge.py", file=sys.stderr)
            return 1
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {len(text.splitlines())} snippets to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
