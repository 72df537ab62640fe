#!/usr/bin/env python3
"""Generate examples/semantic/pairs.jsonl, the labelled request pairs the semantic cache is
measured on (bench/semantic_cache.c): for each pair, two chat requests and whether the
second may be answered with the first one's answer.

Kinds that should hit: `paraphrase` (a reworded question), `typo` (a misspelt word or two,
case and punctuation changes). Kinds that must miss: `negation`, `number`, `date`, `entity`
(a named thing swapped), `scope` (all / last / first ...), `antonym`, `intent` (the same
form asking for another action or object: only the threshold can refuse these), and
`multiturn_context` (same last question after a different earlier turn). `multiturn_paraphrase` (same earlier
turns, reworded last question) should hit. `synonym` (a verb or object replaced by a
synonym) should hit; `substitution` (a verb or object replaced by another one) must miss.
Each pair has a `split`: "dev" for the pairs the guards were written against, "heldout" for
those written afterwards, before the substitution guard, and never tuned on
(bench_semantic_cache --split heldout). Deterministic: fixed seeds, no input files.

usage: scripts/gen_semantic_pairs.py [OUT]   (default examples/semantic/pairs.jsonl)
"""
import json
import pathlib
import random
import sys

SEED = 20261202

# Topics: (verb phrase, object) for how-to questions.
HOWTO = [
    ("cancel", "my subscription"), ("reset", "my password"), ("update", "my billing address"),
    ("change", "my email address"), ("delete", "my account"), ("export", "my contacts"),
    ("download", "my invoices"), ("upgrade", "my plan"), ("transfer", "my domain"),
    ("renew", "my passport"), ("file", "a tax return"), ("apply for", "a library card"),
    ("set up", "a VPN on my laptop"), ("clean", "a cast iron pan"), ("repot", "a cactus"),
    ("back up", "my phone"), ("connect", "a printer to wifi"), ("merge", "two git branches"),
    ("speed up", "my computer"), ("make", "sourdough starter"), ("remove", "a red wine stain"),
    ("install", "a ceiling fan"), ("train", "a puppy to sit"), ("boil", "an egg"),
    ("write", "a cover letter"), ("track", "my package"), ("report", "a lost card"),
    ("book", "a table for dinner"), ("return", "a damaged item"), ("unlock", "my sim card"),
    ("fix", "a leaking tap"), ("compress", "a large pdf"), ("sort", "a list in python"),
    ("plant", "tomato seeds"), ("measure", "my ring size"), ("learn", "to touch type"),
]
HOWTO_FORMS = [
    "How do I {v} {o}?", "How can I {v} {o}?", "What's the best way to {v} {o}?",
    "Can you tell me how to {v} {o}?", "I want to {v} {o}, how do I do that?",
    "Steps to {v} {o}?", "What are the steps to {v} {o}?", "Please explain how to {v} {o}.",
    "how would i go about trying to {v} {o}", "Is there a way to {v} {o}?",
]
FACTS = [
    ("the boiling point of water", "What is {x}?", "Tell me {x}.", "what's {x}"),
    ("the speed of light", "What is {x}?", "How fast is {x}?", "tell me {x} please"),
    ("photosynthesis", "Explain {x} simply.", "Can you explain {x} in simple terms?",
     "what is {x}, in plain words"),
    ("a black hole", "What is {x}?", "Can you describe {x}?", "explain {x} to me"),
    ("inflation", "What causes {x}?", "Why does {x} happen?", "what are the causes of {x}"),
    ("the immune system", "How does {x} work?", "Explain how {x} works.",
     "how does {x} function"),
    ("compound interest", "How does {x} work?", "Explain {x}.", "what is {x} and how does it work"),
    ("a mortgage", "What is {x}?", "Explain what {x} is.", "define {x}"),
    ("machine learning", "What is {x}?", "Give me a short explanation of {x}.",
     "explain {x} briefly"),
    ("the water cycle", "Describe {x}.", "How does {x} work?", "explain {x}"),
    ("a recession", "What is {x}?", "What does {x} mean?", "meaning of {x}"),
    ("DNA", "What is {x} made of?", "What are the building blocks of {x}?",
     "what makes up {x}"),
]
CITIES = ["Paris", "Berlin", "Madrid", "Rome", "Lisbon", "Vienna", "Prague", "Dublin",
          "Oslo", "Athens", "Warsaw", "Tokyo", "Seoul", "Cairo", "Lima", "Toronto"]
PEOPLE = ["Alice", "Bob", "Carol", "David", "Emma", "Frank", "Grace", "Henry", "Maria",
          "Omar", "Priya", "Tom"]
PRODUCTS = ["iPhone", "Pixel", "Galaxy", "Kindle", "ThinkPad", "MacBook", "Surface", "Xbox"]
ENTITY_FORMS = [
    ("What is the population of {e}?", CITIES), ("Book a flight to {e}.", CITIES),
    ("What is the weather like in {e}?", CITIES), ("Issue a refund for {e}.", PEOPLE),
    ("Send the report to {e}.", PEOPLE), ("What did {e} say in the meeting?", PEOPLE),
    ("How do I reset my {e}?", PRODUCTS), ("Is the {e} waterproof?", PRODUCTS),
    ("Compare the {e} battery life.", PRODUCTS), ("Best restaurants in {e}?", CITIES),
]
NUMBER_FORMS = [
    "Track order {n}", "What is {n} times 7?", "Convert {n} dollars to euros",
    "Is {n} a prime number?", "Set a timer for {n} minutes", "Book a table for {n} people",
    "What happened in the year {n}?", "Show invoice number {n}", "Call extension {n}",
    "What is the square root of {n}?", "Reserve room {n} for tonight",
    "How many calories are in {n} grams of rice?",
]
DATES = [("Monday", "Tuesday"), ("Saturday", "Sunday"), ("today", "tomorrow"),
         ("January", "February"), ("March", "May"), ("yesterday", "today"),
         ("this morning", "this evening"), ("Friday", "Thursday"), ("July", "August"),
         ("next week", "next month")]
DATE_FORMS = [
    "Is the store open on {d}?", "What's the weather {d}?", "Schedule the meeting for {d}.",
    "Are there trains running {d}?", "Remind me to call mom {d}.",
    "What events are happening {d}?", "Is the museum free {d}?",
    "How busy is the gym {d}?",
]
NEGATIONS = [
    ("Is ibuprofen safe with alcohol?", "Is ibuprofen unsafe with alcohol?"),
    ("Cancel my subscription.", "Don't cancel my subscription."),
    ("Should I take the job offer?", "Should I not take the job offer?"),
    ("Is this mushroom edible?", "Is this mushroom inedible?"),
    ("Which foods contain gluten?", "Which foods do not contain gluten?"),
    ("Is it legal to park here?", "Is it illegal to park here?"),
    ("I can log in to my account.", "I can't log in to my account."),
    ("Is the answer correct?", "Is the answer incorrect?"),
    ("Why do cats like water?", "Why don't cats like water?"),
    ("Is the bridge open?", "Is the bridge not open?"),
    ("Which countries use the euro?", "Which countries never used the euro?"),
    ("Is this email a scam?", "Is this email not a scam?"),
    ("Did the package arrive?", "Didn't the package arrive?"),
    ("Can I bring a laptop on the plane?", "Can I not bring a laptop on the plane?"),
    ("Is the water drinkable?", "Is the water undrinkable?"),
    ("Is the data encrypted?", "Is the data unencrypted?"),
    ("Are dogs allowed in the park?", "Are dogs not allowed in the park?"),
    ("Is the meeting confirmed?", "Is the meeting unconfirmed?"),
    ("Does the hotel have parking?", "Does the hotel have no parking?"),
    ("Should I water succulents daily?", "Should I never water succulents daily?"),
    ("Is it possible to undo a git commit?", "Is it impossible to undo a git commit?"),
    ("Is this plant toxic to cats?", "Is this plant nontoxic to cats?"),
    ("Will the flight be delayed?", "Will the flight not be delayed?"),
    ("Is the account verified?", "Is the account unverified?"),
]
SCOPES = [
    ("Show all my orders.", "Show my last order."),
    ("Delete every email from this sender.", "Delete the first email from this sender."),
    ("List all the files in this folder.", "List only the newest file in this folder."),
    ("Summarize all the reviews.", "Summarize the most recent review."),
    ("Refund all items in the order.", "Refund one item in the order."),
    ("What are all the symptoms of flu?", "What is the first symptom of flu?"),
    ("Show my orders before the move.", "Show my orders after the move."),
    ("Cancel all my appointments.", "Cancel my next appointment."),
    ("Which planets have moons?", "Which planet has the most moons?"),
    ("Who are the presidents of France?", "Who was the first president of France?"),
    ("Give me some tips for sleeping better.", "Give me the single best tip for sleeping better."),
    ("Archive every message older than a year.", "Archive each message from the last year."),
]
ANTONYMS = [
    ("How do I turn on dark mode?", "How do I turn off dark mode?"),
    ("Should I buy the stock now?", "Should I sell the stock now?"),
    ("How do I enable notifications?", "How do I disable notifications?"),
    ("How do I increase the font size?", "How do I decrease the font size?"),
    ("How do I add a user to the group?", "How do I remove a user from the group?"),
    ("How do I start the service?", "How do I stop the service?"),
    ("How do I zoom in on the map?", "How do I zoom out on the map?"),
    ("How do I log in to the portal?", "How do I log out of the portal?"),
    ("How do I encrypt a file?", "How do I decrypt a file?"),
    ("How do I import a spreadsheet?", "How do I export a spreadsheet?"),
    ("How do I lock the screen?", "How do I unlock the screen?"),
    ("Which is the cheapest flight?", "Which is the most expensive flight?"),
]
CONTEXTS = [
    ("I'm planning a trip to Japan.", "I'm planning a trip to Brazil."),
    ("I have a small apartment.", "I have a large house with a garden."),
    ("I'm writing in Python.", "I'm writing in Rust."),
    ("My car is electric.", "My car runs on diesel."),
    ("I'm vegetarian.", "I eat everything."),
    ("My budget is small.", "Money is no object."),
]
CONTEXT_QUESTIONS = [
    "What should I pack?", "What do you recommend?", "How do I get started?",
    "What are the main costs?", "What should I watch out for?", "Any tips?",
]
CONTEXT_PARAPHRASES = [
    ("What should I pack?", "what should i bring with me?"),
    ("What do you recommend?", "What would you recommend?"),
    ("How do I get started?", "how can I get started?"),
    ("What are the main costs?", "What are the biggest costs?"),
    ("What should I watch out for?", "what should I be careful about?"),
    ("Any tips?", "Do you have any tips?"),
]

# ---- held-out pairs: written after the dev pairs above were measured, and before the
# substitution guard (src/cache/semantic_guard.c) and its synonym table were written; never
# edited to suit them. `split` is "heldout" for these, "dev" for the pairs above.
HELDOUT_HOWTO = [
    ("cancel", "my order"), ("pay", "my electricity bill"), ("replace", "a bike tire"),
    ("paint", "a bedroom wall"), ("clean", "my laptop keyboard"), ("update", "my phone number"),
    ("delete", "my browsing history"), ("print", "a boarding pass"), ("rename", "a file in linux"),
    ("charge", "an electric car"), ("freeze", "fresh bread"), ("sharpen", "a kitchen knife"),
    ("wash", "a wool sweater"), ("change", "a flat tire"), ("schedule", "a doctor's appointment"),
    ("recover", "a deleted file"), ("share", "my screen on zoom"), ("cook", "brown rice"),
    ("store", "fresh herbs"), ("check", "my credit score"), ("find", "my lost phone"),
    ("reset", "my router"), ("edit", "a pdf"), ("feed", "a newborn kitten"),
]
# A verb or object replaced by a synonym: the same question, should hit.
SYNONYMS = [
    ("How do I fix a flat tire?", "How do I repair a flat tire?"),
    ("How do I delete my browsing history?", "How do I erase my browsing history?"),
    ("How do I get a refund for my order?", "How do I obtain a refund for my order?"),
    ("How do I buy a used car?", "How do I purchase a used car?"),
    ("How can I reduce my electricity bill?", "How can I cut my electricity bill?"),
    ("How do I pick a good laptop?", "How do I choose a good laptop?"),
    ("What is the quickest way to cook rice?", "What is the fastest way to cook rice?"),
    ("How do I contact customer support?", "How do I reach customer support?"),
    ("How do I modify my booking?", "How do I change my booking?"),
    ("Help me write an email to my landlord.", "Help me compose an email to my landlord."),
    ("How do I mend a torn shirt?", "How do I repair a torn shirt?"),
    ("What is a good gift for a teacher?", "What is a nice present for a teacher?"),
    ("How do I boost my immune system?", "How do I strengthen my immune system?"),
    ("What are the symptoms of a cold?", "What are the signs of a cold?"),
    ("How do I pause my subscription?", "How do I suspend my subscription?"),
    ("How can I calm down before an exam?", "How can I relax before an exam?"),
    ("How do I clean my sofa?", "How do I clean my couch?"),
    ("How do I fix a leaking faucet?", "How do I fix a leaking tap?"),
    ("What is the price of a train ticket?", "What is the cost of a train ticket?"),
    ("How do I find a good doctor?", "How do I find a good physician?"),
    ("How do I change my profile picture?", "How do I change my profile photo?"),
    ("How do I talk to my kids about money?", "How do I talk to my children about money?"),
    ("Any tips for a job interview?", "Any advice for a job interview?"),
    ("How do I begin learning the guitar?", "How do I start learning the guitar?"),
    ("How do I build a birdhouse?", "How do I make a birdhouse?"),
    ("How do I fix a broken zipper?", "How do I repair a broken zipper?"),
    ("How can I get better sleep?", "How can I improve my sleep?"),
    ("What is the cost of living here?", "What is the price of living here?"),
]
# Another verb or object in the same sentence: another question, must miss.
SUBSTITUTIONS = [
    ("How do I cancel my order?", "How do I track my order?"),
    ("How do I pay my electricity bill?", "How do I dispute my electricity bill?"),
    ("How do I replace a bike tire?", "How do I inflate a bike tire?"),
    ("How do I paint a bedroom wall?", "How do I insulate a bedroom wall?"),
    ("How do I update my phone number?", "How do I verify my phone number?"),
    ("How do I print a boarding pass?", "How do I download a boarding pass?"),
    ("How do I rename a file in linux?", "How do I copy a file in linux?"),
    ("How do I freeze fresh bread?", "How do I bake fresh bread?"),
    ("How do I sharpen a kitchen knife?", "How do I clean a kitchen knife?"),
    ("How do I wash a wool sweater?", "How do I knit a wool sweater?"),
    ("How do I recover a deleted file?", "How do I recover a deleted email?"),
    ("How do I share my screen on zoom?", "How do I record my screen on zoom?"),
    ("How do I cook brown rice?", "How do I store brown rice?"),
    ("How do I check my credit score?", "How do I improve my credit score?"),
    ("How do I reset my router?", "How do I reset my modem?"),
    ("How do I edit a pdf?", "How do I sign a pdf?"),
    ("How do I charge an electric car?", "How do I insure an electric car?"),
    ("Can I change my flight?", "Can I cancel my flight?"),
    ("How do I clean my laptop keyboard?", "How do I clean my laptop screen?"),
    ("How do I schedule a doctor's appointment?", "How do I reschedule a doctor's appointment?"),
    ("How do I water a cactus?", "How do I propagate a cactus?"),
    ("How do I renew my driving licence?", "How do I replace my driving licence?"),
    ("How do I feed a puppy?", "How do I bathe a puppy?"),
    ("What is the price of a train ticket?", "What is the weight limit for a train ticket?"),
    ("How do I fold a fitted sheet?", "How do I wash a fitted sheet?"),
    ("How do I grow basil indoors?", "How do I dry basil indoors?"),
    ("How do I pair my headphones?", "How do I charge my headphones?"),
    ("How do I format a USB drive?", "How do I encrypt a USB drive?"),
]

SYSTEM = "You are a helpful assistant."


def req(text, context=None):
    msgs = [{"role": "system", "content": SYSTEM}]
    if context:
        msgs += [{"role": "user", "content": context},
                 {"role": "assistant", "content": "Got it."}]
    msgs.append({"role": "user", "content": text})
    return {"model": "openai/dspyc-sim", "messages": msgs}


def typo(rng, s):
    words = s.split(" ")
    cands = [i for i, w in enumerate(words) if len(w.strip("?.,!")) > 4]
    for i in rng.sample(cands, min(len(cands), rng.choice([1, 1, 2]))):
        w = words[i]
        core = w.rstrip("?.,!")
        tail = w[len(core):]
        j = rng.randrange(1, len(core) - 1)
        op = rng.choice(["swap", "drop", "double"])
        if op == "swap":
            core = core[:j] + core[j + 1] + core[j] + core[j + 2:]
        elif op == "drop":
            core = core[:j] + core[j + 1:]
        else:
            core = core[:j] + core[j] + core[j:]
        words[i] = core + tail
    out = " ".join(words)
    if rng.random() < 0.3:
        out = out.lower()
    if rng.random() < 0.3:
        out = out.rstrip("?.!")
    return out


def main():
    out = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "examples/semantic/pairs.jsonl")
    rng = random.Random(SEED)
    pairs = []

    split = "dev"

    def add(kind, expect, a, b, ctx_a=None, ctx_b=None):
        pairs.append({"id": len(pairs), "kind": kind, "expect": expect, "split": split,
                      "a": req(a, ctx_a), "b": req(b, ctx_b if ctx_b is not None else ctx_a)})

    for v, o in HOWTO:  # paraphrase: two forms of one question
        f1, f2 = rng.sample(HOWTO_FORMS, 2)
        add("paraphrase", "hit", f1.format(v=v, o=o), f2.format(v=v, o=o))
    for x, *forms in FACTS:
        for f1, f2 in ((forms[0], forms[1]), (forms[0], forms[2]), (forms[1], forms[2])):
            add("paraphrase", "hit", f1.format(x=x), f2.format(x=x))
    for v, o in HOWTO:  # typo
        f = rng.choice(HOWTO_FORMS).format(v=v, o=o)
        add("typo", "hit", f, typo(rng, f))
    for x, *forms in FACTS:
        f = forms[0].format(x=x)
        add("typo", "hit", f, typo(rng, f))
    for a, b in NEGATIONS:
        add("negation", "miss", a, b)
    for v, o in HOWTO:
        add("negation", "miss", f"How do I {v} {o}?", f"How do I not {v} {o}?")
    for f in NUMBER_FORMS:
        for _ in range(9):
            n = rng.randrange(2, 99999)
            m = n
            while m == n:
                s = list(str(n))
                if len(s) > 1 and rng.random() < 0.5:  # transposed digits
                    i = rng.randrange(len(s) - 1)
                    s[i], s[i + 1] = s[i + 1], s[i]
                    m = int("".join(s))
                else:
                    m = n + rng.choice([-10, -1, 1, 2, 10, 100])
            add("number", "miss", f.format(n=n), f.format(n=m))
    for f in DATE_FORMS:
        for d1, d2 in rng.sample(DATES, 8):
            add("date", "miss", f.format(d=d1), f.format(d=d2))
    for f, names in ENTITY_FORMS:
        for _ in range(9):
            e1, e2 = rng.sample(names, 2)
            add("entity", "miss", f.format(e=e1), f.format(e=e2))
    for a, b in SCOPES:
        add("scope", "miss", a, b)
    for a, b in ANTONYMS:
        add("antonym", "miss", a, b)
    for i, (v, o) in enumerate(HOWTO):  # another action on the same object, or vice versa
        f = rng.choice(HOWTO_FORMS)
        v2 = HOWTO[(i + 1 + rng.randrange(len(HOWTO) - 1)) % len(HOWTO)][0]
        o2 = HOWTO[(i + 1 + rng.randrange(len(HOWTO) - 1)) % len(HOWTO)][1]
        if v2 != v:
            add("intent", "miss", f.format(v=v, o=o), f.format(v=v2, o=o))
        if o2 != o:
            add("intent", "miss", f.format(v=v, o=o), f.format(v=v, o=o2))
    for (c1, c2) in CONTEXTS:  # same last question, other earlier turn: a partition change
        for q in rng.sample(CONTEXT_QUESTIONS, 6):
            add("multiturn_context", "miss", q, q, c1, c2)
    for c1, _ in CONTEXTS:
        for q1, q2 in rng.sample(CONTEXT_PARAPHRASES, 6):
            add("multiturn_paraphrase", "hit", q1, q2, c1, c1)
    # held-out: its own generator, so that the dev pairs above stay as they were
    split = "heldout"
    rng = random.Random(SEED + 1)
    for v, o in HELDOUT_HOWTO:
        f1, f2 = rng.sample(HOWTO_FORMS, 2)
        add("paraphrase", "hit", f1.format(v=v, o=o), f2.format(v=v, o=o))
    for v, o in HELDOUT_HOWTO:
        f = rng.choice(HOWTO_FORMS).format(v=v, o=o)
        add("typo", "hit", f, typo(rng, f))
    for a, b in SYNONYMS:
        add("synonym", "hit", a, b)
    for a, b in SUBSTITUTIONS:
        add("substitution", "miss", a, b)
    for i, (v, o) in enumerate(HELDOUT_HOWTO):
        f = rng.choice(HOWTO_FORMS)
        v2 = HELDOUT_HOWTO[(i + 1 + rng.randrange(len(HELDOUT_HOWTO) - 1)) % len(HELDOUT_HOWTO)][0]
        o2 = HELDOUT_HOWTO[(i + 1 + rng.randrange(len(HELDOUT_HOWTO) - 1)) % len(HELDOUT_HOWTO)][1]
        if v2 != v:
            add("intent", "miss", f.format(v=v, o=o), f.format(v=v2, o=o))
        if o2 != o:
            add("intent", "miss", f.format(v=v, o=o), f.format(v=v, o=o2))
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w") as f:
        for p in pairs:
            f.write(json.dumps(p, sort_keys=True) + "\n")
    kinds = {}
    for p in pairs:
        k = f'{p["split"]} {p["kind"]}'
        kinds[k] = kinds.get(k, 0) + 1
    print(f"{out}: {len(pairs)} pairs: " + ", ".join(f"{k} {n}" for k, n in kinds.items()))


if __name__ == "__main__":
    main()
