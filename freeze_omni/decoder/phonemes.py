"""Phoneme input of the speech decoder: text -> espeak-ng IPA symbols -> ids.

Upstream feeds the speech decoder the LLM's own token embeddings. With a few hours of assistant-voice speech that
asks the decoder to learn how each of ~49k BPE tokens sounds, and held-out text is full of tokens it saw rarely or
never; a small phoneme inventory is the classic remedy of low-resource TTS. ``decoder.text_input: phonemes`` in a
bundle selects this input (the LLM hidden states still reach the prefix decoder).

espeak-ng is already a system dependency (user-side speech synthesis); its library is called in-process through
``ctypes`` (about 0.4 ms per sentence; a subprocess costs ~60 ms, too much on the path to the first audio).
espeak-ng keeps global state, so calls are serialised by a lock.

Symbols: ``PAD`` (0), ``UNK`` (1), then :data:`DEFAULT_SYMBOLS`, one character each: a space between words, the
clause marks ``, . ? !`` and espeak-ng's English IPA (stress and length marks are symbols of their own). A bundle
stores its inventory (``decoder.symbols``), so extending the default never changes a trained bundle's ids.

>>> p = Phonemizer()
>>> p.phonemize("The vet, gelded.")
'ðə vˈɛt, ɡˈɛldᵻd.'
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading

PAD, UNK = 0, 1
N_SPECIAL = 2
CLAUSE_MARKS = ",.?!"
# espeak-ng 1.51 en-us IPA over the tiny-en corpus and the Q&A answers (the 47 seen) plus rarer IPA letters.
DEFAULT_SYMBOLS = (" " + CLAUSE_MARKS + "ˈˌːɪnteədʌɹszilwkmapɛvfæʊðuɐhbɚɔɜɑojɾʃᵻɡŋθʒʔ\u0329xr"
                   "ɒɣçɬβɲʎcɟqɕʑyøœɯɨʏɵɘɤʁχħʕɦɻɭɳʈɖɽʂʐɫ")

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000
_CHARS_UTF8 = 1
_PHONEMES_IPA = 0x02


class PhonemizerError(RuntimeError):
    pass


class _Espeak:
    """The loaded library (one per process)."""

    _instance: "_Espeak | None" = None
    _lock = threading.Lock()

    def __init__(self) -> None:
        name = ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1"
        try:
            lib = ctypes.cdll.LoadLibrary(name)
        except OSError as e:
            raise PhonemizerError(f"cannot load the espeak-ng library ({e}); install it: "
                                  "sudo apt-get install -y espeak-ng (make setup does)") from e
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
        lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_int]
        if lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, None, _INITIALIZE_DONT_EXIT) <= 0:
            raise PhonemizerError("espeak-ng failed to initialise (is espeak-ng-data installed?)")
        self.lib, self.voice = lib, None

    @classmethod
    def get(cls) -> "_Espeak":
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def clauses(self, text: str, voice: str) -> list[str]:
        """IPA of each clause espeak-ng finds in ``text``."""
        with self._lock:
            if voice != self.voice:
                if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
                    raise PhonemizerError(f"espeak-ng has no voice {voice!r}")
                self.voice = voice
            buf = ctypes.create_string_buffer(text.encode("utf-8"))
            ptr = ctypes.c_void_p(ctypes.addressof(buf))
            out = []
            while ptr.value:
                res = self.lib.espeak_TextToPhonemes(ctypes.byref(ptr), _CHARS_UTF8, _PHONEMES_IPA)
                out.append((res or b"").decode("utf-8", errors="replace").strip())
            return [c for c in out if c]


class Phonemizer:
    """Text -> IPA string -> symbol ids.

    Args:
        voice: espeak-ng voice (language) name.
        symbols: the inventory after PAD and UNK (default :data:`DEFAULT_SYMBOLS`).
    """

    def __init__(self, voice: str = "en-us", symbols: str = DEFAULT_SYMBOLS) -> None:
        if len(set(symbols)) != len(symbols):
            raise ValueError("phoneme symbols must be distinct characters")
        self.voice, self.symbols = voice, symbols
        self.index = {s: i + N_SPECIAL for i, s in enumerate(symbols)}
        self.espeak = _Espeak.get()

    @property
    def n_symbols(self) -> int:
        return len(self.symbols) + N_SPECIAL

    def phonemize(self, text: str) -> str:
        """IPA of ``text``: clauses joined by ``", "``, ended by the text's own final mark (``.`` if none)."""
        clauses = self.espeak.clauses(text, self.voice)
        if not clauses:
            return ""
        end = text.rstrip()[-1:]
        return ", ".join(clauses) + (end if end in CLAUSE_MARKS and end != "," else ".")

    def ids(self, text: str) -> list[int]:
        """Symbol ids of :meth:`phonemize` (``UNK`` for symbols outside the inventory); [] for silent text."""
        return [self.index.get(ch, UNK) for ch in self.phonemize(text)]
