"""Write data/demo/demo.jsonl: four small tasks whose data we wrote ourselves (no third-party text).

Deterministic: run it again and the file is byte-for-byte the same.

    python data/demo/make_demo.py
"""

from __future__ import annotations

import json
from pathlib import Path

OUT = Path(__file__).with_name("demo.jsonl")

ANTONYMS = [
    ("hot", "cold"), ("big", "small"), ("fast", "slow"), ("happy", "sad"), ("light", "dark"),
    ("early", "late"), ("full", "empty"), ("hard", "soft"), ("high", "low"), ("open", "closed"),
    ("rich", "poor"), ("strong", "weak"), ("young", "old"), ("wet", "dry"), ("loud", "quiet"),
    ("thick", "thin"), ("clean", "dirty"), ("cheap", "expensive"), ("near", "far"), ("true", "false"),
    ("up", "down"), ("inside", "outside"), ("begin", "end"), ("win", "lose"), ("buy", "sell"),
    ("push", "pull"), ("remember", "forget"), ("accept", "refuse"), ("arrive", "leave"),
    ("increase", "decrease"), ("day", "night"), ("friend", "enemy"), ("question", "answer"),
    ("north", "south"), ("summer", "winter"), ("heavy", "light"),
]

REVIEWS = [
    ("The blender is quiet and crushes ice in seconds.", "Positive"),
    ("It broke after two days and support never replied.", "Negative"),
    ("Comfortable shoes, I walked all day without sore feet.", "Positive"),
    ("The paint peeled off the first time I washed it.", "Negative"),
    ("Battery lasts a whole week, which I did not expect.", "Positive"),
    ("Arrived late, scratched, and missing the charger.", "Negative"),
    ("My kids love this board game and ask to play every night.", "Positive"),
    ("The instructions made no sense and two screws were missing.", "Negative"),
    ("Great value for the price, would buy it again.", "Positive"),
    ("The zipper jammed on the first trip.", "Negative"),
    ("Soft fabric and the colour is exactly as pictured.", "Positive"),
    ("Smells like burnt plastic every time I turn it on.", "Negative"),
    ("Setup took five minutes and it just works.", "Positive"),
    ("Too small for anything but a phone, a waste of money.", "Negative"),
    ("The knife is sharp and well balanced in the hand.", "Positive"),
    ("It leaks whenever the lid is closed.", "Negative"),
    ("Friendly seller and the lamp looks lovely on my desk.", "Positive"),
    ("The app crashes constantly and loses my settings.", "Negative"),
    ("Sturdy, light, and folds flat for storage.", "Positive"),
    ("The sound cuts out every few minutes.", "Negative"),
    ("This kettle boils water faster than my old one.", "Positive"),
    ("Cheap material that tore within a week.", "Negative"),
    ("The chair is comfortable even after long work days.", "Positive"),
    ("I returned it because the screen was dim and blurry.", "Negative"),
    ("Keeps my coffee hot for hours.", "Positive"),
    ("The handle snapped off while I was carrying groceries.", "Negative"),
    ("Beautiful pictures and the story kept me reading.", "Positive"),
    ("Nothing like the photos, the colours are faded.", "Negative"),
    ("The tent went up quickly and stayed dry in the rain.", "Positive"),
    ("Loud fan noise makes it impossible to sleep.", "Negative"),
    ("Fits perfectly and the stitching is neat.", "Positive"),
    ("It stopped charging after a month.", "Negative"),
]

SENTENCES = [
    "the cat sat on the mat", "we walked to the river", "she plays the piano every morning",
    "my brother bakes bread on sundays", "the train leaves at noon", "birds sing before sunrise",
    "he painted the fence green", "they built a small boat", "the library opens at nine",
    "i forgot my umbrella again", "rain fell all night long", "the dog chased the red ball",
    "our team won the final match", "the soup needs more salt", "she wrote a letter to her aunt",
    "the children planted tomatoes", "a cold wind blew from the north", "he fixed the old clock",
    "we watched the stars from the roof", "the bus was full this morning", "my phone battery is low",
    "the baker opened a new shop", "snow covered the quiet village", "they sang songs by the fire",
    "the river flows into the sea", "she found a coin on the path", "the museum has a new exhibit",
    "he runs five miles each day", "the garden smells of roses", "we missed the last ferry",
    "the teacher read a short story", "an owl watched from the tree", "the market sells fresh fish",
    "my sister learns to drive",
]

WORDS = [
    "apple", "river", "garden", "window", "music", "pencil", "mountain", "coffee", "yellow",
    "planet", "bridge", "silver", "orange", "forest", "thunder", "candle", "market", "violin",
    "harbor", "lemon", "rocket", "castle", "dolphin", "meadow", "lantern", "pepper", "island",
    "shadow", "turtle", "marble", "basket", "glacier", "tiger", "ribbon",
]

# Two descriptions per task: the first is the default, the second a paraphrase (a variant).
TASKS = {
    "antonyms": (
        ["Give the antonym of the word: the word with the opposite meaning.",
         "Answer with a word that means the opposite of the given word."],
        [(a, b) for a, b in ANTONYMS],
        None,
    ),
    "review_sentiment": (
        ["Decide whether the short product review is positive or negative.",
         "Classify the sentiment of a customer review as Positive or Negative."],
        REVIEWS,
        ["Positive", "Negative"],
    ),
    "reverse_words": (
        ["Reverse the order of the words in the sentence.",
         "Write the same words in the opposite order, last word first."],
        [(s, " ".join(reversed(s.split()))) for s in SENTENCES],
        None,
    ),
    "uppercase": (
        ["Rewrite the given word in capital letters.",
         "Convert every letter of the word to uppercase."],
        [(w, w.upper()) for w in WORDS],
        None,
    ),
}


def records():
    for name, (descriptions, pairs, options) in TASKS.items():
        for i, (text, answer) in enumerate(pairs):
            record = {"task": name, "input": text, "output": answer}
            if options:
                record["options"] = options
            if i < len(descriptions):  # one description per line suffices; extra lines add variants
                record["description"] = descriptions[i]
            yield record


def main() -> None:
    lines = [json.dumps(r, ensure_ascii=False) for r in records()]
    OUT.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {len(lines)} lines to {OUT}")


if __name__ == "__main__":
    main()
