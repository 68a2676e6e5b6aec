"""State-2 material (do not answer): side talk, backchannels and the texts they are filled from, the clip
plan (:func:`plan_state2`) and the generated sounds (noise, babble, coughs, knocks).
See :mod:`freeze_omni.data.qa`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from freeze_omni.data import corpus as C
from freeze_omni.data.qa.labels import SAMPLE_RATE
from freeze_omni.data.qa.questions import _partition
from freeze_omni.data.text import normalize_text

# --------------------------------------------------------------------------------------------------------------
# State-2 material: texts and sounds

#: Backchannels: display text -> what the TTS is given (espeak-ng spells consonant-only words letter by letter).
BACKCHANNELS = {
    "uh-huh": "uh-huh", "mm-hmm": "umhum", "hmm": "hmm", "yeah yeah": "yeah yeah", "right": "right",
    "okay": "okay", "ok ok": "okay okay", "I see": "I see", "oh": "oh", "ah": "ah", "wow": "wow", "sure": "sure",
    "got it": "got it", "uh": "uh", "um": "um", "huh": "huh", "yeah": "yeah", "yep": "yep",
    "right right": "right, right", "oh really": "oh, really", "no way": "no way", "mhm": "umhum",
    "uh-huh, yeah": "uh-huh, yeah", "alright": "alright", "cool": "cool", "oh okay": "oh, okay",
    "hmm, okay": "hmm, okay", "yes yes": "yes, yes", "sure sure": "sure, sure", "oh wow": "oh wow",
    "ah, I see": "ah, I see", "interesting": "interesting", "oh nice": "oh, nice", "yeah, totally": "yeah, totally",
    "mm": "um", "er": "er", "well": "well", "anyway": "anyway", "oh dear": "oh dear", "ha ha": "ha ha",
    "oops": "oops", "uh oh": "uh oh", "hmm hmm": "hmm, hmm", "yeah, right": "yeah, right", "okay, okay": "okay, okay",
    "go on": "go on", "I know": "I know", "exactly": "exactly", "true": "true", "fair enough": "fair enough",
    "mm, yeah": "um, yeah", "uh, well": "uh, well", "huh, okay": "huh, okay", "oh, right": "oh, right"}

_ADDRESS = ["Honey", "Mom", "Dad", "Sweetie", "Kids", "Guys", "Babe", "Buddy", "Emma", "Jake", "Sarah", "Tom",
            "Grandma", "Mike", "Lily", "Sam", "Dear", "Ben", "Anna", "Chris", "Grandpa", "Sis", "Jenny", "Max"]
_OBJECTS = ["keys", "remote", "charger", "scissors", "umbrella", "wallet", "blue bag", "laptop", "towel",
            "cereal", "milk", "salt", "tape", "ladder", "hammer", "book", "headphones", "jacket", "spoon", "lid"]
_COLORS = ["blue", "red", "green", "yellow", "black", "white", "gray", "pink", "orange", "purple", "brown"]
_ROOMS = ["kitchen", "garage", "car", "living room", "bathroom", "basement", "hallway", "bedroom", "office",
          "backyard", "closet", "drawer", "table", "counter", "shelf"]
_TIMES = ["six", "seven thirty", "noon", "five", "eight", "nine fifteen", "half past four", "ten", "three"]
_DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday", "tomorrow", "tonight"]

#: Side talk: speech not addressed to the assistant. ``{addr}`` etc. are filled at random (:func:`_side_talk_fill`).
SIDE_TALK = [
    # to family and friends in the room
    "{addr}, did you feed the dog?", "{addr}, where did you put the car keys?", "{addr}, have you seen my phone?",
    "{addr}, are you ready to go?", "{addr}, can you turn the music down?", "{addr}, did you lock the back door?",
    "Who left the milk out again?", "{addr}, do you want pasta or rice tonight?",
    "{addr}, are you still on the phone?",
    "{addr}, did you call your grandmother back?", "Is the dryer done yet?", "{addr}, can you grab the mail?",
    "{addr}, did you take the trash out?", "{addr}, have you done your homework?",
    "{addr}, can you hand me that towel?",
    "Are we out of coffee again?", "Has anyone seen my glasses?", "{addr}, when are you getting home?",
    "{addr}, can you pick up some bread on the way?", "{addr}, dinner is ready!", "{addr}, turn off the TV, please.",
    "Put your shoes on, we're leaving.", "{addr}, don't forget your lunch.", "I'll be right there, {addr}.",
    "The baby is asleep, keep it down.", "{addr}, your mom called earlier.", "I'm going to the store, need anything?",
    "{addr}, it's your turn to do the dishes.", "{addr}, the package came today.",
    "{addr}, where did you put the {obj}?",
    "{addr}, can you pass me the {obj}?", "Did you move my {obj}?", "{addr}, the {obj} is in the {room}.",
    "{addr}, have you seen the {obj} anywhere?", "Don't touch the {obj}, it's wet.",
    "{addr}, bring me the {obj}, please.",
    "{addr}, come look at this!", "{addr}, hurry up, we're going to be late.", "{addr}, what time does the game start?",
    "{addr}, did you water the plants?", "{addr}, who's picking up the kids today?", "Is it raining out there, {addr}?",
    "{addr}, can you help me carry these bags?", "{addr}, we need to leave at {time}.", "{addr}, lunch is at {time}.",
    "{addr}, I'll see you {day}.", "{addr}, are we still on for {day}?", "Did you remember to buy milk, {addr}?",
    "{addr}, close the window, it's freezing.", "{addr}, the oven is still on.", "{addr}, stop it, both of you.",
    "{addr}, say thank you to your aunt.", "{addr}, where's the remote?", "{addr}, is that your jacket on the floor?",
    # on the phone
    "Hold on, I'm on the phone.", "Sorry, can I call you back in five minutes?", "Yeah, I'll be there around {time}.",
    "No, I said {day}, not next week.", "Hang on, let me find a pen.", "Can you hear me now?",
    "You're breaking up, I can't hear you.", "Okay, talk to you later, bye.", "Wait, say that again?",
    "I'm driving, can I call you later?", "Yes, speaking.", "Sure, put him on.",
    "No worries, just text me the address.",
    "I'm putting you on speaker.", "Sorry, wrong number.", "Hi, it's me, are you home?", "Did you get my message?",
    "Just a second, someone's at the door.", "Let me check my calendar and get back to you.",
    "No, that's fine, {day} works for me.", "Tell her I said hi.", "Okay, love you, bye.",
    "Hello? Hello? Are you there?", "I'll send it to you tonight.", "Can we move it to {day}?",
    "Sorry, I'm in a meeting, I'll call you back.", "Yeah, I know, I know.", "Oh no, really? When did that happen?",
    # directions to someone nearby
    "No, the {color} one, not that one.", "No, the {color} one, not the {color2} one.", "Put it on the {room}.",
    "A little to the left.", "Not that drawer, the other one.", "Careful, that's hot.", "Just leave it by the door.",
    "No, the big box goes upstairs.", "Hand me the one with the {color} lid.", "Pull, don't push.",
    "Okay, now lift it on three.", "Turn left at the next light.", "Park right here, behind the van.",
    "Wait for me, I'm coming.", "Go ahead, I'll catch up.", "Higher, higher, stop!", "Put the {obj} in the {room}.",
    "Move it a bit closer to the wall.", "Not there, over here.", "Hold the ladder for me.", "Slow down, slow down.",
    "Take the next exit.", "Watch out for the step.", "Leave the {obj} on the {room}.", "Try the {color} cable.",
    "Keep going straight.", "Is it plugged in?", "Press the other button.", "One more, and then we're done.",
    # self talk
    "Where did I put my glasses?", "Oh no, I forgot the milk.", "Okay, let me think.", "Hmm, where was I?",
    "Ugh, not again.", "Now what was I going to say?", "Let me see, two cups of flour.", "Oops, I dropped it.",
    "Oh, that's annoying.", "Come on, come on, load already.", "Right, keys, wallet, phone.",
    "I really need more coffee.", "Why is this so slow today?", "I should have taken the bus.", "Okay, focus.",
    "Wait, is it {day} already?", "Where did I leave the {obj}?", "I know I put the {obj} somewhere.",
    "Did I turn off the stove?", "Ah, there it is.", "Note to self, buy more milk.", "This printer hates me.",
    "Okay, one thing at a time.", "What was that noise?", "I can never find anything in this {room}.",
    "Shoot, I'm late.", "Let's see what's in the fridge.", "Hmm, maybe the {color} one.",
    # pets and children
    "Good boy, sit!", "No, Max, drop it!", "Who's a good dog?", "Stop chasing the cat.",
    "Come here, sweetie, let's get your coat on.", "Gentle with the baby.", "Kitty, get off the counter!",
    "Time for your bath.", "Don't eat that!", "Share with your sister.", "Use your inside voice, please.",
    "Brush your teeth and go to bed.", "Who wants a snack?", "Finish your vegetables first.",
    "No more cartoons today.", "Shoes off in the house, please.", "Go get your backpack.",
    # at the TV, in meetings, in shops
    "Oh come on, that was a foul!", "Did you see that?", "Sorry, go ahead, you were saying?",
    "Can everyone hear me?", "Let's take a five minute break.", "I'll send you the slides after the meeting.",
    "Excuse me, is this seat taken?", "Two coffees, please, to go.", "Thanks, keep the change.",
    "Can I get the check, please?", "Next slide, please.", "You're on mute.", "I think we lost {addr}.",
    "Can you share your screen?", "Let's pick this up {day}.", "Sorry, I have another call.",
    "No, I'm just looking, thanks.", "Do you have this in {color}?", "Could I have a bag, please?",
    "What a goal!", "Oh, this show again.", "Turn it up, I love this song.", "Shh, this is the best part.",
    "Table for two, please.", "Could we get some more water?", "Is this the line for the bus?",
    "Sorry, after you.", "Do you take cards?", "Excuse me, you dropped your glove.", "Paper or plastic? Paper's fine.",
    "Can you ring me up over here?", "How much for the {color} one?", "I'll just have the soup, thanks.",
    "Morning, Jim!", "Hey, long time no see!", "Nice to see you, {addr}.", "See you {day}, {addr}!",
    "Happy birthday, {addr}!", "Congratulations, you two!", "Thanks for coming, drive safe.",
    # work and school, to colleagues
    "{addr}, did you finish the report?", "Can you print that for me, {addr}?", "Who took my stapler?",
    "The meeting got moved to {time}.", "I'll be in the {room} if you need me.", "{addr}, is the coffee machine fixed?",
    "Let's grab lunch at {time}.", "Can you cover for me {day}?", "I'll email the client later.",
    "Did anyone order the pizza?", "Page twelve, everyone.", "Pencils down, please.", "Who's presenting first?",
    # cooking, chores, games
    "Stir it for another minute.", "Taste this, is it too salty?", "The water's boiling, {addr}.",
    "Pass me the {obj}, quick.", "Set the timer for ten minutes.", "Your move, {addr}.", "That's checkmate!",
    "Roll the dice, {addr}.", "No cheating this time.", "Whose turn is it to vacuum?", "Fold these and put them away.",
    "Don't forget to feed the fish.", "Help me flip the mattress.", "Hold the door, please!",
    "Okay kids, seatbelts on.", "Are we there yet?", "Who wants ice cream?", "Everybody say cheese!",
    "Smile, {addr}!", "Put that back where you found it.", "Quiet, the baby's sleeping.",
]


def _side_talk_fill(tpl: str, rng: np.random.Generator) -> str:
    color = C._pick(rng, _COLORS)
    return tpl.format(addr=C._pick(rng, _ADDRESS), obj=C._pick(rng, _OBJECTS), room=C._pick(rng, _ROOMS),
                      time=C._pick(rng, _TIMES), day=C._pick(rng, _DAYS), color=color,
                      color2=C._pick(rng, [c for c in _COLORS if c != color]))


STATE2_KINDS = {"side_talk": 0.4, "backchannel": 0.2, "noise": 0.12, "babble": 0.12, "cough": 0.1, "knock": 0.06}
_SPOKEN = ("side_talk", "backchannel")


@dataclass
class State2Item:
    """One planned state-2 clip; ``spoken`` is what the TTS says (spoken kinds only)."""

    id: str
    kind: str
    text: str
    split: str
    spoken: str = ""


def plan_state2(n: int, heldout_frac: float = 0.1, seed: int = 0, avoid: Iterable[str] = ()) -> list[State2Item]:
    """``n`` state-2 clips over :data:`STATE2_KINDS` (by their weights). Spoken kinds take their text from
    split template pools (held-out side-talk templates and backchannels never occur in train); sound kinds
    are held out at random. Texts whose normalized form is in ``avoid`` (e.g. the Q&A questions) are skipped.
    """
    avoid = {normalize_text(a) for a in avoid}
    kinds = list(STATE2_KINDS)
    counts = [int(n * STATE2_KINDS[k]) for k in kinds]
    for i in range(n - sum(counts)):
        counts[i % len(kinds)] += 1
    side = _partition(SIDE_TALK, heldout_frac, seed, "side_talk")
    back = _partition(list(BACKCHANNELS), heldout_frac, seed, "backchannel")
    rng = np.random.default_rng([seed, 201])
    items: list[State2Item] = []
    for kind, count in zip(kinds, counts):
        seen: set[str] = set()
        for j in range(count):
            split = "heldout" if rng.random() < heldout_frac else "train"
            text = spoken = ""
            if kind == "side_talk":
                fallback = ""
                for _ in range(50):  # a new text if possible, else a repeat; never one in ``avoid``
                    text = _side_talk_fill(C._pick(rng, side[split] or side["train"]), rng)
                    if normalize_text(text) in avoid:
                        text = ""
                    elif normalize_text(text) not in seen:
                        break
                    fallback = fallback or text
                text = text or fallback
                if not text:
                    continue
                seen.add(normalize_text(text))
                spoken = text
            elif kind == "backchannel":
                text = C._pick(rng, back[split] or back["train"])
                spoken = BACKCHANNELS[text]
            items.append(State2Item(f"s2_{kind}_{j:05d}", kind, text, split, spoken))
    return items


def _fade(x: np.ndarray, sr: int, seconds: float) -> np.ndarray:
    n = min(len(x) // 2, int(seconds * sr))
    if n > 0:
        ramp = np.linspace(0.0, 1.0, n)
        x[:n] *= ramp
        x[-n:] *= ramp[::-1]
    return x


def _pad_and_level(x: np.ndarray, rng: np.random.Generator, sr: int) -> np.ndarray:
    """Scale to a random peak (-30..-3 dBFS) and add 50–200 ms of silence before, 100–300 ms after (like TTS)."""
    peak = float(np.abs(x).max()) or 1.0
    x = x / peak * 10 ** (rng.uniform(-30, -3) / 20)
    lead, trail = int(rng.uniform(0.05, 0.2) * sr), int(rng.uniform(0.1, 0.3) * sr)
    return np.concatenate([np.zeros(lead), x, np.zeros(trail)]).astype(np.float32)


def noise_clip(rng: np.random.Generator, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Stationary white, pink or brown noise, 0.3–2.5 s with 20–100 ms fades, then level and silences."""
    from freeze_omni.data.augment import colored_noise

    n = int(rng.uniform(0.3, 2.5) * sr)
    x = colored_noise(n, C._pick(rng, ["white", "pink", "brown"]), rng)
    return _pad_and_level(_fade(x, sr, rng.uniform(0.02, 0.1)), rng, sr)


def cough_clip(rng: np.random.Generator, sr: int = SAMPLE_RATE) -> np.ndarray:
    """1–3 cough-like bursts: band-passed noise with a sharp attack, an exponential decay and a voiced buzz."""
    from scipy.signal import butter, sosfilt

    parts = []
    for _ in range(int(rng.integers(1, 4))):
        n = int(rng.uniform(0.15, 0.4) * sr)
        t = np.arange(n) / sr
        lo = rng.uniform(150, 500)
        sos = butter(2, [lo, min(rng.uniform(1500, 5000), sr / 2 - 100)], btype="band", fs=sr, output="sos")
        noise = sosfilt(sos, rng.standard_normal(n))
        f0 = rng.uniform(90, 250)
        buzz = np.sign(np.sin(2 * np.pi * f0 * t)) * rng.uniform(0.0, 0.5) * np.std(noise)
        env = np.minimum(t / 0.01, 1.0) * np.exp(-t / rng.uniform(0.05, 0.15))
        parts.append((noise + buzz) * env)
        parts.append(np.zeros(int(rng.uniform(0.08, 0.25) * sr)))
    return _pad_and_level(np.concatenate(parts[:-1]), rng, sr)


def knock_clip(rng: np.random.Generator, sr: int = SAMPLE_RATE) -> np.ndarray:
    """2–5 knocks or taps: clicks through a decaying resonance (a door, a table), 0.1–0.35 s apart."""
    parts = []
    f = rng.uniform(120, 900)
    for _ in range(int(rng.integers(2, 6))):
        n = int(0.12 * sr)
        t = np.arange(n) / sr
        knock = np.sin(2 * np.pi * f * t * rng.uniform(0.95, 1.05)) * np.exp(-t / rng.uniform(0.01, 0.04))
        knock += 0.3 * rng.standard_normal(n) * np.exp(-t / 0.005)
        parts.append(knock)
        parts.append(np.zeros(int(rng.uniform(0.1, 0.35) * sr)))
    return _pad_and_level(np.concatenate(parts[:-1]), rng, sr)


def babble_clip(rng: np.random.Generator, sources: Sequence[np.ndarray], sr: int = SAMPLE_RATE) -> np.ndarray:
    """3–6 other utterances overlapped at random offsets and gains (0.8–2.5 s): unintelligible background talk."""
    n = int(rng.uniform(0.8, 2.5) * sr)
    x = np.zeros(n)
    for _ in range(int(rng.integers(3, 7))):
        s = np.asarray(sources[int(rng.integers(len(sources)))], dtype=np.float64)
        if len(s) == 0:
            continue
        s = np.tile(s, -(-n // len(s)) + 1)
        start = int(rng.integers(len(s) - n + 1))
        x += s[start:start + n] * 10 ** (rng.uniform(-10, 0) / 20)
    return _pad_and_level(_fade(x, sr, 0.05), rng, sr)

