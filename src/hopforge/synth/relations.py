"""Relations: the fact a link's evidence states about its source entity ("was born in", "is part of").

A question states each hop as a fact about an entity ("That singer was born in a city
that ..."), never as "its article links to": whether one article links to another is not
something a searcher can check outside Wikipedia (issue 15). A hop's fact comes from the
link rows between its two pages, best first:

1. an **infobox field** whose key names a relation (``birth_place: Houston`` -> "was born
   in"; numbered keys such as ``predecessor2`` count as their base key);
2. a **prose sentence** whose words right before the anchor end in a relational phrase
   from :data:`PROSE` ("... was a founding member of the [[Sex Pistols]]" -> "was a member
   of"). Only the phrase before the anchor is read, within its clause: the subject is the
   page the sentence is on, which is the source entity of the hop.

A link with neither yields no relation. The walker only walks edges with at least one
relation-bearing link (:func:`relation_edges`), so every hop of a walk can be stated as a
fact; the lexicons are deliberately small and precise rather than complete.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

INFOBOX_FIELD = re.compile(r"^\s*([A-Za-z_][\w ]{0,40}?)\s*:\s")

# Infobox key -> relation (subject: the page whose infobox it is).
INFOBOX: dict[str, str] = {
    "birth_place": "was born in", "death_place": "died in", "resting_place": "is buried in",
    "burial_place": "is buried in", "spouse": "was married to", "partner": "was the partner of",
    "parents": "is a child of", "children": "is a parent of", "relatives": "is related to",
    "origin": "comes from", "hometown": "comes from", "residence": "lived in",
    "genre": "works in the genre of", "influences": "was influenced by", "influenced": "influenced",
    "education": "studied at", "alma_mater": "studied at", "alma mater": "studied at",
    "predecessor": "succeeded", "successor": "was succeeded by", "president": "served under",
    "vicepresident": "had as vice president", "vice_president": "had as vice president",
    "monarch": "was under the reign of", "prime_minister": "served under", "capital": "has as its capital",
    "largest_city": "has as its largest city", "headquarters": "is headquartered in",
    "location": "is located in", "city": "is located in", "state": "is located in", "country": "is located in",
    "seat": "has its seat in", "region": "lies in", "subdivision_name": "lies in",
    "official_languages": "has as an official language", "languages": "uses the language",
    "common_languages": "used the language", "regional_languages": "has as a regional language",
    "recognized_regional_languages": "has as a regional language", "associated_acts": "worked with",
    "label": "recorded for", "past_members": "had as a member", "current_members": "has as a member",
    "known_for": "is known for", "author": "was written by", "subject": "is about", "named_for": "is named after",
    "founder": "was founded by", "founders": "was founded by", "leader_name": "is led by",
    "commander": "had among its commanders", "combatant": "was fought by", "teams": "played for",
    "team": "plays for", "league": "plays in", "stadium": "plays at", "ballpark": "plays at",
    "main_interests": "worked on", "notable_students": "taught", "doctoral_advisor": "studied under",
    "field": "worked in", "fields": "worked in", "workplaces": "worked at", "institutions": "worked at",
    "party": "is a member of", "allegiance": "served", "branch": "served in", "battles": "fought in",
    "awards": "received", "treatment": "is treated with", "complications": "can lead to",
    "causes": "can be caused by", "stylistic_origins": "grew out of", "cultural_origins": "grew out of",
    "subgenres": "has as a subgenre", "derivatives": "gave rise to", "fusion_genres": "gave rise to",
    "instruments": "uses the instrument", "patronage": "is the patron of", "religion": "follows",
    "citizenship": "is a citizen of", "nationality": "is a national of",
}

# Prose: the words before the anchor (lowercase, one clause, trailing determiners dropped) end
# with one of these; the relation is the right-hand side. Order matters: the first match wins.
PROSE: list[tuple[str, str]] = [
    (r"born (?:in|at|near)", "was born in"),
    (r"died (?:in|at|near)", "died in"),
    (r"(?:buried|interred) (?:in|at)", "is buried in"),
    (r"(?:grew up|was raised|raised|lived|settled|resided|resides|lives) in", "lived in"),
    (r"(?:moved|relocated|emigrated|returned) (?:back )?to", "moved to"),
    (r"(?:founding |former |original |a |an )*members? of", "was a member of"),
    (r"membership (?:in|of)", "is a member of"),
    (r"(?:joined|to join|join)", "joined"),
    (r"(?:is |was |became |remains )?(?:a )?part of", "is part of"),
    (r"(?:bordered|bounded) (?:to the \w+ )?by|borders|bordering|(?:north|south|east|west|northeast|northwest|"
     r"southeast|southwest) by", "borders"),
    (r"capital (?:city )?of", "is the capital of"),
    (r"(?:influenced|inspired) by|influences (?:include|included|including)|(?:the )?influence of|"
     r"influences from", "was influenced by"),
    (r"(?:worked|collaborated|performed|recorded|toured|partnered|sang|played) (?:together )?with|"
     r"collaborations? with|duet with|alongside|along with", "worked with"),
    (r"(?:older|younger|elder|twin|half-)?(?:sister|brother|sibling)", "is a sibling of"),
    (r"(?:married|marriage to|wife|husband|spouse)", "was married to"),
    (r"(?:son|daughter|child) of", "is a child of"),
    (r"(?:father|mother|parent) of", "is a parent of"),
    (r"(?P<verb>directed|produced|written|composed|painted|designed|created|invented|discovered|developed|"
     r"founded|established|led|popularized|popularised|coined|proposed|formulated|signed|recorded|published|"
     r"built|commissioned|owned|acquired|defeated|assassinated|killed|elected|appointed|nominated) by",
     "was {verb} by"),
    (r"(?:is |was |are )?(?:located|situated|based|headquartered|centred|centered) in", "is based in"),
    (r"(?:is|was|are|as) (?:a |an |the )?(?:\w+ )?(?:subgenre|sub-genre|genre|form|branch|type|variety|offshoot|"
     r"variant|dialect|school) of", "is a form of"),
    (r"(?:derived|developed|evolved|emerged|originated|grew|descended|sprang) (?:from|out of)|roots in",
     "grew out of"),
    (r"(?:fusion|combination|mixture|blend|elements) of|combin(?:ed|ing|es)(?: \w+)? with", "draws on"),
    (r"studied (?:at|under|with)|graduated from|attended|educated at|enrolled (?:at|in)|alumnus of|"
     r"alumna of", "studied at"),
    (r"taught at|professor at|lectured at|teaching at", "taught at"),
    (r"(?:signed|recorded) (?:a contract )?(?:with|for|to)", "was signed to"),
    (r"succeeded|successor to|replaced", "succeeded"),
    (r"succeeded by|predecessor (?:of|to)|replaced by", "was succeeded by"),
    (r"independence from", "gained independence from"),
    (r"birthplace of", "is the birthplace of"),
    (r"(?:visited|state visit to|a visit to|visit to|toured)", "visited"),
    (r"official languages? (?:of|in)", "is an official language of"),
    (r"(?:invaded|conquered|occupied|annexed)", "invaded"),
    (r"(?:war|wars|conflict|fought|battle|battles|fighting|struggle) (?:with|against)", "fought against"),
    (r"(?:appeared|starred|featured|cast|role) in", "appeared in"),
    (r"(?:won|winning|winner of|awarded|received)", "won"),
    (r"(?:played|plays|playing) (?:for|with)|traded to|drafted by|signed with", "played for"),
    (r"(?:precursor|forerunner) (?:to|of)", "was a forerunner of"),
    (r"(?:rivalry|rivals?|feud) with", "has a rivalry with"),
    (r"(?:used to treat|treatment of|treat|treats|treating)", "is used to treat"),
    (r"(?:increased )?risk of|(?:can )?(?:cause|causes|caused|leads? to|led to|results? in)", "can lead to"),
    (r"caused by|due to", "can be caused by"),
    (r"named (?:after|for)|in (?:honou?r|memory) of", "is named after"),
    (r"(?:president|prime minister|leader|head|chairman|governor|mayor|king|queen|emperor|ruler|chancellor) of",
     "led"),
    (r"(?:served|worked|fought|enlisted) (?:in|with|for|under)", "served in"),
    (r"elected to", "was elected to"),
    (r"(?:allied with|alliance with|ally of|treaty with)", "allied with"),
    (r"(?:home|seat) (?:of|to)", "is home to"),
    (r"(?:spoken|used|practi[cs]ed|widespread|popular) in", "is widespread in"),
    (r"met with|met|meeting with", "met"),
    (r"(?:opposed|opposition to|critic of|criticized|criticised)", "opposed"),
    (r"(?:supported|support for|endorsed|endorsement of)", "supported"),
    (r"(?:adaptation of|based on)", "is based on"),
    (r"(?:the )?(?:works|work|writings|ideas|teachings|theories) of", "drew on the work of"),
    (r"(?:student|pupil|disciple|protégé) of|studied under", "studied under"),
    (r"(?:teacher|mentor|tutor) of", "taught"),
]
# The same fact stated from the other entity: "X was born in Y" is "Y is the birthplace of X".
# A relation without an inverse here is only used in the direction it was stated.
INVERSE: dict[str, str] = {
    "was born in": "is the birthplace of", "is the birthplace of": "was born in", "died in": "is the place of death of",
    "is buried in": "is the burial place of", "was married to": "was married to", "is a child of": "is a parent of",
    "is a parent of": "is a child of", "is related to": "is related to", "comes from": "is the home town of",
    "lived in": "was home to", "was home to": "lived in", "moved to": "became the home of",
    "works in the genre of": "is a genre of", "was influenced by": "influenced", "influenced": "was influenced by",
    "studied at": "was attended by", "succeeded": "was succeeded by", "was succeeded by": "succeeded",
    "had as vice president": "was vice president under", "has as its capital": "is the capital of",
    "is the capital of": "has as its capital", "has as its largest city": "is the largest city of",
    "is located in": "is the location of", "lies in": "contains", "has its seat in": "is the seat of",
    "has as an official language": "is an official language of",
    "is an official language of": "has as an official language", "uses the language": "is a language used in",
    "worked with": "worked with", "had as a member": "was a member of", "has as a member": "is a member of",
    "was a member of": "had as a member", "is a member of": "has as a member", "was written by": "wrote",
    "is about": "is the subject of", "is named after": "is the namesake of", "was founded by": "founded",
    "is led by": "leads", "had among its commanders": "was a commander in", "played for": "had as a player",
    "plays for": "has as a player", "taught": "studied under", "studied under": "taught",
    "is treated with": "is used to treat", "is used to treat": "is treated with", "can lead to": "can be caused by",
    "can be caused by": "can lead to", "grew out of": "gave rise to", "gave rise to": "grew out of",
    "has as a subgenre": "is a subgenre of", "is a form of": "has as a form", "joined": "was joined by",
    "is part of": "includes", "borders": "borders", "is a sibling of": "is a sibling of",
    "is based in": "is home to", "is home to": "is based in", "gained independence from": "once ruled",
    "visited": "was visited by", "invaded": "was invaded by", "fought against": "fought against",
    "appeared in": "featured", "was a forerunner of": "grew out of", "has a rivalry with": "has a rivalry with",
    "led": "was led by", "allied with": "allied with", "met": "met", "opposed": "was opposed by",
    "supported": "was supported by", "is based on": "is the basis of", "drew on the work of": "influenced",
    "was under the reign of": "reigned over", "fought in": "involved", "served in": "had serving in it",
    "received": "was awarded to", "is headquartered in": "hosts the headquarters of",
}


def inverse(phrase: str) -> str | None:
    """The relation seen from its object ("was born in" -> "is the birthplace of"); None if unknown."""
    if phrase in INVERSE:
        return INVERSE[phrase]
    m = re.fullmatch(r"was (\w+) by", phrase)  # "was directed by" -> "directed"
    return m.group(1) if m else None


_PROSE = [(re.compile(rf"(?:^|\b)(?:{pat})$"), rel) for pat, rel in PROSE]
# Dropped from the end of the words before the anchor before matching.
_TRAILING = re.compile(r"(?:\s+|^)(?:the|a|an|his|her|its|their|this|that|these|those|then|now|later|former|"
                       r"modern|modern-day|present-day|neighbou?ring|nearby|rival|fellow|future|fellow|"
                       r"famous|legendary|renowned|new|old|several|many|other|such|both|all|various|two|three)$")
_CLAUSE_BREAK = re.compile(r"[,;:()\[\]\"“”—–]|\s-\s")
# Words that make the phrase before the anchor a plan, a wish or a negation, not a fact.
_NOT_A_FACT = re.compile(r"\b(?:plan|plans|planned|planning|hope|hoped|hoping|attempt|attempted|attempting|tried|"
                         r"trying|sought|seeking|wanted|wanting|proposed|threatened|considered|refused|failed|never|"
                         r"not|no|nor|would|could|might|may|rumou?red|alleged|allegedly|reportedly|invited|asked|urged)\b")
_LEADING_YEAR = re.compile(r"^(?:in|on|by|during|after|before|since|from|around|circa|c\.)\s+(?:the\s+)?(?:[A-Za-z]+\s+)?"
                           r"(?:\d{1,2}\s+)?\d{4}s?,?\s+", re.I)
_PERSON_PRONOUNS = frozenset("he she his her".split())
_THING_PRONOUNS = frozenset("it its".split())
_ANY_PRONOUNS = frozenset("they their we both".split())
# "The band ...", "This city ...": a generic head noun standing for the page's subject.
_SUBJECT_NOUNS = frozenset(
    "band group duo city town country state nation team club franchise war conflict company university college "
    "school agency organization organisation party empire republic kingdom genre style movement disease disorder "
    "condition treatment therapy project church religion language island river region capital government program "
    "programme league museum building tower theory ideology mission".split())
# Infobox keys that place a thing; on a person's page they name a constituency or a team's home instead.
_PLACE_KEYS = frozenset({"location", "city", "state", "country", "region", "subdivision_name", "seat"})
# Nouns that make the anchor a modifier ("the Keanu Reeves movie", "the Obama administration").
_MODIFIED = re.compile(r"\s+(?:movie|film|album|song|single|novel|book|show|series|administration|government|era|"
                       r"period|family|estate|foundation|award|medal|prize|trophy|cup|speech|doctrine|case|campaign|"
                       r"presidency|tour|concert|biography|memorial|museum|house|library|center|centre|style)\b")
# A leading adverbial ("In 1994, ...", "After the war, ...") before the main clause's subject.
_LEADING_ADVERBIAL = re.compile(r"^(?:in|on|at|after|before|during|following|by|since|from|with|although|while|when|"
                                r"as|upon|until|under|despite|between|within|throughout|later|then|also|however|"
                                r"meanwhile|today|initially|eventually|subsequently)\b"
                                r"(?:\s+(?!(?:he|she|it|they|we)\b)[\w'’.-]+){0,6},\s*", re.I)


@dataclass(frozen=True)
class Relation:
    """A fact about a hop's source entity: ``<source> <phrase> <destination>``."""

    phrase: str  # "was born in"
    source: str  # "infobox:birth_place" | "sentence"
    anchor: str | None
    sentence: str | None
    position: int


def infobox_key(sentence: str | None) -> str | None:
    """The infobox key of a ``key: value`` evidence line (digits dropped: ``predecessor2`` -> ``predecessor``)."""
    m = INFOBOX_FIELD.match(sentence or "")
    if not m:
        return None
    return re.sub(r"\d+$", "", m.group(1).strip().lower()).strip("_ ") or None


def about_subject(sentence: str, subject: str, person: bool | None = None) -> bool:
    """Whether the main clause of ``sentence`` is about the page ``subject`` (the sentence is on its page).

    Its first word after a leading adverbial is a pronoun that fits the subject (he/she for a
    person, it for a thing, they for either), "The/This <generic noun>" (not for a person), or
    a word of the subject's title. A crude test, but it keeps facts about other subjects out
    ("Members of Queen dismissed ...", "Nazi Germany invaded the Soviet Union")."""
    s = _LEADING_ADVERBIAL.sub("", _LEADING_YEAR.sub("", sentence.strip(), count=1), count=1)
    words = re.findall(r"[\w'’-]+", s)
    if not words:
        return False
    first = words[0].lower()
    if first in _ANY_PRONOUNS or (first in _PERSON_PRONOUNS and person is not False) or (
            first in _THING_PRONOUNS and not person):
        return True
    if person and first in ("the", "this"):
        return False
    if first in ("the", "this") and len(words) > 1 and words[1].lower() in _SUBJECT_NOUNS:
        return True
    names = {w.lower() for w in re.findall(r"[\w'’-]+", re.sub(r"\s*\(.*\)$", "", subject)) if len(w) > 2}
    return first in names or (len(words) > 1 and first in ("the",) and words[1].lower() in names)


def relation_of(anchor: str | None, sentence: str | None, position: int = 0, subject: str | None = None,
                person: bool | None = None) -> Relation | None:
    """The relation one link row on page ``subject`` (a person's page when ``person``) states, or None.

    Prose relations need the anchor to be a whole name (not followed by a possessive or by
    more capitalised words: "Martin Scorsese's Gangs of New York", "the Margaret Thatcher
    Medal") and, when ``subject`` is given, a sentence about the subject (:func:`about_subject`)."""
    key = infobox_key(sentence)
    if key is not None:
        phrase = None if person and key in _PLACE_KEYS else INFOBOX.get(key)
        return Relation(phrase, f"infobox:{key}", anchor, sentence, position) if phrase else None
    if not sentence or not anchor:
        return None
    i = sentence.find(anchor)
    if i <= 0:
        return None
    after = sentence[i + len(anchor):]
    if re.match(r"(?:['’]s?\b|\s+[A-Z0-9])", after) or _MODIFIED.match(after):
        return None
    if subject is not None and not about_subject(sentence, subject, person):
        return None
    before = _CLAUSE_BREAK.split(sentence[:i])[-1].lower().strip()
    before = re.sub(r"[^\w\s'’-]", " ", before)
    before = re.sub(r"\s+", " ", before).strip()
    for _ in range(3):
        stripped = _TRAILING.sub("", before).strip()
        if stripped == before:
            break
        before = stripped
    if not before or _NOT_A_FACT.search(before):
        return None
    for pat, rel in _PROSE:
        m = pat.search(before)
        if m:
            phrase = rel.format(verb=m.group("verb")) if "{verb}" in rel else rel
            return Relation(phrase, "sentence", anchor, sentence, position)
    return None


def best_relation(rows: Iterable[dict[str, Any]], subject: str | None = None, person: bool | None = None
                  ) -> Relation | None:
    """The relation of the link rows between two pages (on page ``subject``): an infobox relation
    first, then the first prose one (rows in link position order)."""
    found: list[Relation] = []
    for r in sorted(rows, key=lambda r: r.get("position") or 0):
        rel = relation_of(r.get("anchor"), r.get("sentence"), r.get("position") or 0,
                          subject if subject is not None else r.get("src_title"), person)
        if rel is not None:
            if rel.source.startswith("infobox:"):
                return rel
            found.append(rel)
    return found[0] if found else None
