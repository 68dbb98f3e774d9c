"""Seeded synthetic e-commerce data: product catalogs and product reviews.

This is the project's embedded default data: it needs no download and is fully determined
by its seed and knobs (every random choice comes from one ``np.random.default_rng(seed)``;
the same seed gives the identical corpus). Every table, figure or log line made from it
must say "synthetic": its numbers are not comparable with results on real data.

Two corpora are made from the module-level vocabularies:

* :func:`make_catalog`: product titles labeled with their product category ("running
  shoes", "coffee makers", ...), grouped into departments ("apparel", "kitchen", ...). A
  title mixes two phrases of its own category with shared attribute phrases (brands,
  colors, sizes, materials, marketing) and names of *decoy* products that are sold in the
  catalog but never labeled (cross-sell noise), plus a few phrases of other labeled
  categories. Decoy nouns dominate raw cosine similarity of a frozen sentence encoder;
  because the same decoys appear in every category, a representation learned on the
  meta-train categories can learn to discount them for unseen categories. That is the
  learnable structure which makes meta-training pay off.
* :func:`make_reviews`: product reviews labeled negative / positive, grouped by product
  domain. Sentiment is carried by domain-specific aspect phrases ("the zipper broke",
  "brews hot coffee"), so cues differ per domain, by generic sentiment words shared across
  domains, negations ("not great") and mixed sentences ("... but the handle got too hot"),
  all wrapped in neutral filler and a domain topic that dominate raw similarity.

Two task families are registered (:data:`metarec.registry.FAMILIES`):
``synthetic_category`` (class split of categories, 11 / 5 / 8) and ``synthetic_sentiment``
(group split of domains, 10 / 2 / 4). Both are marked ``synthetic=True`` and record the
generator, seed, knobs and split in ``metadata``. Splits are seeded by the data seed, never
by a training seed.

The default knobs were tuned with the frozen all-MiniLM-L6-v2 encoder (mean pooling),
nearest-prototype classification on the test split, seed 0: category 5-way 5-shot about
72% frozen vs about 87% after a within-class whitening learned on the train categories;
sentiment 2-way 5-shot about 57% frozen vs about 75% along a logistic-regression direction
learned on the train domains.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Sequence

import numpy as np

from metarec.data.corpus import DataError, LabeledCorpus
from metarec.data.family import TaskFamily, split_ids
from metarec.registry import FAMILIES

# ---------------------------------------------------------------------------------------
# Catalog vocabulary. Every category: (department, head nouns, feature phrases).
# Order interleaves departments so that the first ``n_categories`` entries stay balanced.
# ---------------------------------------------------------------------------------------

CATEGORIES: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "running shoes": (
        "apparel",
        ("running shoes", "trainers", "jogging sneakers", "road runners"),
        ("cushioned midsole", "breathable mesh upper", "lightweight", "marathon", "heel drop",
         "rubber outsole", "responsive foam", "reflective laces", "arch support", "pace"),
    ),
    "coffee makers": (
        "kitchen",
        ("coffee maker", "drip brewer", "espresso machine", "coffee machine"),
        ("12 cup carafe", "programmable brew", "reusable filter", "keep warm plate", "grind and brew",
         "milk frother", "barista", "water reservoir", "single serve pods", "brew strength"),
    ),
    "phone cases": (
        "electronics",
        ("phone case", "protective cover", "bumper case", "smartphone case"),
        ("shockproof corners", "screen protector", "raised camera lip", "wireless charging compatible",
         "slim fit", "card slot", "drop tested", "kickstand", "precise cutouts", "anti scratch back"),
    ),
    "bed sheets": (
        "home",
        ("sheet set", "bed sheets", "fitted sheet", "pillowcases"),
        ("deep pocket", "thread count", "queen bed", "wrinkle resistant", "sateen weave",
         "flat sheet", "mattress", "cooling sleep", "percale", "king size bed"),
    ),
    "face moisturizers": (
        "beauty",
        ("face moisturizer", "face cream", "hydrating lotion", "day cream"),
        ("hyaluronic acid", "spf 30", "dry skin", "non greasy", "fragrance free",
         "dermatologist tested", "anti aging", "niacinamide", "oil free", "sensitive skin"),
    ),
    "yoga mats": (
        "sports",
        ("yoga mat", "exercise mat", "pilates mat", "workout mat"),
        ("non slip", "extra thick", "carrying strap", "alignment lines", "floor exercises",
         "6mm", "stretching", "sweat resistant", "cushioning for knees", "home workout"),
    ),
    "building blocks": (
        "toys",
        ("building blocks", "brick set", "construction toy", "building kit"),
        ("pieces", "compatible bricks", "minifigures", "stem learning", "ages 6 and up",
         "instruction booklet", "creative play", "castle build", "snap together", "baseplate"),
    ),
    "office chairs": (
        "office",
        ("office chair", "desk chair", "ergonomic chair", "task chair"),
        ("lumbar support", "adjustable armrests", "swivel", "rolling casters", "mesh back",
         "gas lift", "tilt lock", "headrest", "seat height", "home office"),
    ),
    "dog leashes": (
        "pets",
        ("dog leash", "lead", "retractable leash", "training leash"),
        ("padded handle", "medium dogs", "puppy", "walking", "swivel clip",
         "16 ft cord", "tangle free", "poop bag holder", "large breeds", "reflective stitching"),
    ),
    "hiking boots": (
        "apparel",
        ("hiking boots", "trail boots", "trekking boots", "mountain boots"),
        ("waterproof membrane", "ankle support", "lugged sole", "trail", "gusseted tongue",
         "backpacking", "vibram", "toe cap", "rocky terrain", "insulated"),
    ),
    "blenders": (
        "kitchen",
        ("blender", "smoothie maker", "countertop blender", "personal blender"),
        ("crushes ice", "blending jar", "pulse", "smoothies", "stainless blades",
         "1000 watt motor", "to go cup", "frozen drinks", "variable speed", "puree"),
    ),
    "wireless earbuds": (
        "electronics",
        ("wireless earbuds", "earphones", "in ear headphones", "true wireless buds"),
        ("bluetooth 5.3", "noise cancelling", "charging case", "30 hour playtime", "touch controls",
         "deep bass", "microphone", "ipx5", "low latency", "ear tips"),
    ),
    "table lamps": (
        "home",
        ("table lamp", "bedside lamp", "desk lamp", "nightstand light"),
        ("lampshade", "dimmable", "warm light", "led bulb included", "usb port",
         "touch control", "living room", "bedroom", "pull chain", "e26 socket"),
    ),
    "shampoos": (
        "beauty",
        ("shampoo", "hair wash", "clarifying shampoo", "volumizing shampoo"),
        ("sulfate free", "color treated hair", "scalp", "dandruff", "curly hair",
         "argan oil", "paraben free", "lather", "frizz control", "16 fl oz bottle"),
    ),
    "dumbbells": (
        "sports",
        ("dumbbells", "dumbbell set", "hand weights", "adjustable dumbbell"),
        ("pounds", "hex", "strength training", "neoprene coated", "knurled handle",
         "weight plates", "rack", "kg", "home gym", "biceps"),
    ),
    "board games": (
        "toys",
        ("board game", "strategy game", "family game", "card game"),
        ("2 to 4 players", "game night", "dice", "game board", "60 minute playtime",
         "cards and tokens", "cooperative", "expansion", "rules", "party game"),
    ),
    "notebooks": (
        "office",
        ("notebook", "journal", "notepad", "spiral notebook"),
        ("ruled pages", "college ruled", "hardcover", "100 sheets", "dotted grid",
         "bullet journal", "ink bleed", "paper", "bookmark ribbon", "writing"),
    ),
    "cat litter": (
        "pets",
        ("cat litter", "clumping litter", "kitty litter", "litter"),
        ("odor control", "low dust", "scoopable", "multi cat", "clay",
         "litter box", "unscented", "tracking", "20 lb bag", "clumps"),
    ),
    "winter jackets": (
        "apparel",
        ("winter jacket", "parka", "puffer coat", "down jacket"),
        ("hood", "faux fur trim", "windproof", "down filled", "warm",
         "zip pockets", "snow", "cold weather", "quilted", "packable"),
    ),
    "chef knives": (
        "kitchen",
        ("chef knife", "kitchen knife", "santoku knife", "knife set"),
        ("8 inch blade", "razor sharp", "full tang", "forged", "high carbon",
         "ergonomic handle", "slicing", "dicing", "knife block", "sharpener"),
    ),
    "laptop chargers": (
        "electronics",
        ("laptop charger", "power adapter", "usb c charger", "ac adapter"),
        ("65w", "power delivery", "replacement cord", "fast charging", "ultrabook",
         "gan", "overcurrent protection", "dc plug", "compatible laptops", "wall charger"),
    ),
    "area rugs": (
        "home",
        ("area rug", "runner rug", "carpet", "floor mat"),
        ("5x7", "low pile", "non shedding", "rug pad", "hallway",
         "shag", "machine washable", "persian pattern", "hardwood floors", "stain resistant"),
    ),
    "lipsticks": (
        "beauty",
        ("lipstick", "lip color", "liquid lipstick", "lip stain"),
        ("matte finish", "long lasting", "transfer proof", "creamy", "nude shade",
         "lips", "pigmented", "moisturizing formula", "bold red", "lip liner"),
    ),
    "bike helmets": (
        "sports",
        ("bike helmet", "cycling helmet", "bicycle helmet", "mtb helmet"),
        ("mips", "vents", "adjustable dial", "visor", "cpsc certified",
         "road cycling", "chin strap", "rear light", "commuter", "impact protection"),
    ),
    "plush toys": (
        "toys",
        ("plush toy", "stuffed animal", "teddy bear", "cuddly toy"),
        ("soft", "huggable", "embroidered eyes", "12 inch", "baby shower",
         "bedtime", "unicorn", "fluffy", "snuggle", "stuffed"),
    ),
    "printer ink": (
        "office",
        ("ink cartridge", "printer ink", "toner cartridge", "ink refill"),
        ("black and color", "page yield", "inkjet", "high yield", "compatible printers",
         "remanufactured", "tri color", "laser", "refill kit", "xl cartridges"),
    ),
    "aquarium filters": (
        "pets",
        ("aquarium filter", "fish tank filter", "canister filter", "sponge filter"),
        ("gallons", "filter media", "biological filtration", "quiet pump", "submersible",
         "water flow", "tropical fish", "carbon cartridge", "gph", "tank"),
    ),
    "yoga pants": (
        "apparel",
        ("yoga pants", "leggings", "workout tights", "joggers"),
        ("high waisted", "squat proof", "four way stretch", "tummy control", "side pockets",
         "7/8 length", "moisture wicking", "inseam", "buttery soft", "gym"),
    ),
    "cookware sets": (
        "kitchen",
        ("cookware set", "frying pan", "saucepan", "skillet"),
        ("nonstick", "induction compatible", "tempered glass lids", "oven safe", "dutch oven",
         "pots and pans", "ceramic coating", "stock pot", "even heating", "saute"),
    ),
    "smart watches": (
        "electronics",
        ("smart watch", "fitness tracker", "smartwatch", "activity band"),
        ("heart rate", "sleep tracking", "step counter", "gps", "amoled display",
         "notifications", "blood oxygen", "watch faces", "battery life", "strap"),
    ),
    "throw pillows": (
        "home",
        ("throw pillow", "cushion cover", "decorative pillow", "pillow insert"),
        ("18x18", "couch", "sofa", "hidden zipper", "boho",
         "insert included", "accent", "square", "velvet cover", "farmhouse decor"),
    ),
    "perfumes": (
        "beauty",
        ("perfume", "eau de parfum", "fragrance", "cologne"),
        ("floral notes", "vanilla", "spray", "3.4 oz", "long lasting scent",
         "musk", "citrus", "for women", "sandalwood", "eau de toilette"),
    ),
    "camping tents": (
        "sports",
        ("camping tent", "dome tent", "backpacking tent", "pop up tent"),
        ("4 person", "rainfly", "easy setup", "poles", "campsite",
         "stakes", "footprint", "vestibule", "mesh windows", "sleeping"),
    ),
    "remote control cars": (
        "toys",
        ("rc car", "remote control car", "rc truck", "monster truck"),
        ("2.4ghz", "off road", "rechargeable battery", "30 mph", "controller",
         "4wd", "drift", "all terrain", "1:16 scale", "stunt"),
    ),
    "desk organizers": (
        "office",
        ("desk organizer", "file organizer", "pen holder", "desktop caddy"),
        ("drawers", "mesh", "compartments", "stationery", "sticky notes",
         "pencil cup", "letter tray", "clutter", "paper clips", "supplies"),
    ),
    "pet beds": (
        "pets",
        ("pet bed", "dog bed", "cat bed", "orthopedic bed"),
        ("memory foam", "bolster", "calming", "removable cover", "washable",
         "small dogs", "donut", "non skid bottom", "nest", "joint relief"),
    ),
}

# Decoy products are sold in the same catalog but never labeled: titles name them as
# cross-sell or "compatible with" noise. Their nouns are strong cues for a sentence encoder,
# so they dominate raw similarity; since the same decoys appear in every labeled category,
# a representation learned on training categories can learn to discount them for unseen
# categories. This is the learnable structure that makes meta-training pay off.
DECOY_PRODUCTS: dict[str, tuple[str, ...]] = {
    "garden hoses": ("garden hose", "expandable hose", "hose reel", "spray nozzle", "sprinkler"),
    "vacuum cleaners": ("vacuum cleaner", "robot vacuum", "cordless vacuum", "stick vacuum", "dust buster"),
    "sunglasses": ("sunglasses", "aviators", "polarized shades", "sport glasses", "reading glasses"),
    "water bottles": ("water bottle", "insulated tumbler", "sports bottle", "flask", "travel mug"),
    "clocks": ("wall clock", "alarm clock", "desk clock", "cuckoo clock", "kitchen timer"),
    "backpacks": ("backpack", "daypack", "laptop backpack", "rucksack", "messenger bag"),
    "toothbrushes": ("electric toothbrush", "sonic toothbrush", "brush heads", "water flosser", "toothpaste"),
    "guitar gear": ("guitar strings", "guitar picks", "capo", "guitar strap", "clip on tuner"),
    "strollers": ("baby stroller", "jogging stroller", "car seat", "pram", "baby carrier"),
    "bird feeders": ("bird feeder", "hummingbird feeder", "suet cage", "birdhouse", "bird bath"),
    "towels": ("bath towel", "towel set", "hand towels", "beach towel", "bath mat"),
    "power tools": ("power drill", "cordless drill", "impact driver", "circular saw", "drill bits"),
}

# Shared attribute vocabularies: drawn with the same distribution in every category, so they
# carry no label information, only label-independent variation (as in real titles).
BRANDS: tuple[str, ...] = (
    "Zentrix", "Kovalo", "Brightwell", "Nordvik", "Aquilon", "Pemberly", "Vantorra", "Quillo",
    "Maxwood", "Lumora", "Heddrik", "Solvane", "Tarragon", "Ombrix", "Fennick", "Calloway",
    "Ruvexa", "Dunmore", "Yelvin", "Praxo", "Oakhurst", "Velmont", "Skarnia", "Bexley",
)
COLORS: tuple[str, ...] = (
    "black", "white", "navy blue", "charcoal gray", "rose gold", "forest green", "burgundy",
    "beige", "sky blue", "olive", "coral", "silver", "teal", "mustard yellow", "lavender",
)
SIZES: tuple[str, ...] = (
    "small", "medium", "large", "extra large", "compact", "mini", "2 pack", "3 pack",
    "family size", "travel size", "set of 4", "oversized", "value pack", "one size",
)
MATERIALS: tuple[str, ...] = (
    "stainless steel", "cotton", "silicone", "bamboo", "leather", "recycled plastic",
    "aluminum", "nylon", "polyester", "wood", "glass", "ceramic", "microfiber", "rubber",
)
MARKETING: tuple[str, ...] = (
    "best seller", "free shipping", "limited edition", "premium quality", "new 2024 model",
    "perfect gift", "top rated", "upgraded version", "deluxe", "eco friendly", "bpa free",
    "official store", "lifetime warranty", "hot deal", "amazing value", "professional grade",
    "for men and women", "holiday sale", "satisfaction guaranteed", "great for everyday use",
)
SHARED_VOCABULARIES: tuple[tuple[str, ...], ...] = (COLORS, SIZES, MATERIALS, MARKETING)
#: Longest title in words (brand included), so titles stay under ~32 word pieces.
MAX_TITLE_WORDS = 20

# ---------------------------------------------------------------------------------------
# Review vocabulary. Every domain: neutral topic words, positive and negative aspect
# phrases (the domain-specific sentiment cues).
# ---------------------------------------------------------------------------------------

DOMAINS: dict[str, dict[str, tuple[str, ...]]] = {
    "apparel": {
        "topic": ("this jacket", "the shirt", "these jeans", "the dress", "the sweater"),
        "pos": ("fits true to size", "the fabric feels soft", "the stitching is solid",
                "keeps me warm", "the color did not fade", "the zipper is sturdy"),
        "neg": ("the zipper broke", "runs two sizes small", "the seams ripped",
                "the fabric pilled after one wash", "the color faded fast", "it shrank in the dryer"),
    },
    "kitchen": {
        "topic": ("this coffee maker", "the blender", "the pan", "this kettle", "the toaster"),
        "pos": ("brews hot coffee", "heats evenly", "cleans up easily", "blends ice smoothly",
                "the nonstick coating holds up", "it is dishwasher safe"),
        "neg": ("the coating peeled off", "it leaks water everywhere", "the handle got too hot",
                "the motor burned out", "the coffee tastes like plastic", "it rusted in a week"),
    },
    "electronics": {
        "topic": ("these headphones", "the charger", "this speaker", "the tablet", "the cable"),
        "pos": ("the battery lasts all day", "pairs instantly", "the sound is crisp",
                "charges my phone fast", "the screen is sharp", "the connection never drops"),
        "neg": ("it overheats", "the battery died in an hour", "keeps disconnecting",
                "stopped charging after a week", "the audio crackles", "the screen flickers"),
    },
    "toys": {
        "topic": ("this toy", "the puzzle", "the doll", "this playset", "the toy car"),
        "pos": ("my kids play with it daily", "the pieces are sturdy", "kept my son busy for hours",
                "easy for small hands", "my daughter loves it", "great for learning"),
        "neg": ("pieces were missing", "broke on the first day", "the paint chipped",
                "my kid lost interest fast", "sharp edges on the parts", "the wheels fell off"),
    },
    "books": {
        "topic": ("this novel", "the book", "this cookbook", "the paperback", "the memoir"),
        "pos": ("could not put it down", "the characters feel real", "the writing is beautiful",
                "the plot kept me guessing", "the recipes actually work", "a page turner"),
        "neg": ("the plot dragged", "the ending made no sense", "full of typos",
                "the characters were flat", "the binding fell apart", "boring from the start"),
    },
    "beauty": {
        "topic": ("this moisturizer", "the shampoo", "the serum", "this lipstick", "the mascara"),
        "pos": ("my skin feels smooth", "absorbs quickly", "the scent is lovely",
                "cleared up my skin", "my hair looks shiny", "lasts all day"),
        "neg": ("broke me out", "my skin got irritated", "smells like chemicals",
                "left my face greasy", "dried out my hair", "the color rubbed off"),
    },
    "sports": {
        "topic": ("this yoga mat", "the dumbbells", "the treadmill", "this bike helmet", "the resistance bands"),
        "pos": ("stays put during workouts", "the grip is excellent", "holds up to heavy use",
                "comfortable on my knees", "the weights feel solid", "easy to adjust"),
        "neg": ("the mat slides around", "the band snapped", "the grip wore off",
                "the handle came loose", "smells like rubber for weeks", "wobbles when i run"),
    },
    "home": {
        "topic": ("this lamp", "the rug", "these sheets", "the curtains", "this pillow"),
        "pos": ("looks elegant in my living room", "the sheets feel cool", "washes well",
                "the light is warm", "ties the room together", "stays fluffy"),
        "neg": ("the rug sheds everywhere", "the lamp wobbles", "the sheets pill",
                "the curtains are see through", "the pillow went flat", "the color looks cheap"),
    },
    "garden": {
        "topic": ("this hose", "the planter", "these seeds", "the pruning shears", "the sprinkler"),
        "pos": ("the seeds sprouted quickly", "cuts branches cleanly", "covers the whole lawn",
                "does not kink", "my tomatoes are thriving", "drains well"),
        "neg": ("the hose kinks constantly", "none of the seeds sprouted", "the shears went dull",
                "the planter cracked in the sun", "the sprinkler leaks", "the plants died"),
    },
    "pets": {
        "topic": ("this dog bed", "the cat food", "the leash", "this litter box", "the chew toy"),
        "pos": ("my dog sleeps on it every night", "my cat eats it right away", "holds up to chewing",
                "controls the odor", "the leash feels strong", "my puppy loves it"),
        "neg": ("my dog tore it apart in minutes", "my cat refuses to eat it", "the clip snapped",
                "the litter smells awful", "made my dog sick", "the stuffing came out"),
    },
    "office": {
        "topic": ("this office chair", "the notebook", "the desk", "these pens", "the printer"),
        "pos": ("my back feels better", "the ink flows smoothly", "assembly was simple",
                "prints sharp pages", "the paper does not bleed", "sturdy desk surface"),
        "neg": ("the chair sinks slowly", "the pens skip", "the desk wobbles",
                "the printer jams constantly", "the ink bleeds through", "the armrest cracked"),
    },
    "automotive": {
        "topic": ("these wiper blades", "the car charger", "this dash cam", "the floor mats", "the car cover"),
        "pos": ("wipes the windshield clean", "fits my car perfectly", "the video is clear at night",
                "installed in minutes", "keeps the floor clean", "charges while driving"),
        "neg": ("streaks the windshield", "does not fit my car", "the footage is blurry",
                "the mount fell off the dash", "the mats curl up", "blew a fuse"),
    },
    "baby": {
        "topic": ("this stroller", "the diapers", "the baby monitor", "this car seat", "the bottles"),
        "pos": ("no leaks overnight", "my baby sleeps soundly", "folds with one hand",
                "the monitor picture is clear", "easy to clean bottles", "gentle on her skin"),
        "neg": ("the diapers leak", "gave my baby a rash", "the monitor loses signal",
                "the stroller wheel jammed", "the bottles leak milk", "hard to buckle"),
    },
    "music": {
        "topic": ("this guitar", "the keyboard", "the ukulele", "these drumsticks", "the microphone"),
        "pos": ("stays in tune", "the keys feel responsive", "sounds rich and warm",
                "great action on the neck", "the mic picks up clean vocals", "well balanced sticks"),
        "neg": ("will not stay in tune", "a key stopped working", "the strings buzz",
                "the mic hums loudly", "the sticks splintered", "the tuning pegs slip"),
    },
    "tools": {
        "topic": ("this drill", "the screwdriver set", "the saw", "this tape measure", "the wrench"),
        "pos": ("drills through hardwood easily", "the battery holds a charge", "the bits stay sharp",
                "cuts straight lines", "the tape locks firmly", "grips bolts tightly"),
        "neg": ("the chuck wobbles", "the bits stripped", "the battery would not charge",
                "the blade went dull fast", "the tape will not retract", "the wrench slips"),
    },
    "grocery": {
        "topic": ("this coffee", "the snacks", "the tea", "this olive oil", "the protein bars"),
        "pos": ("tastes fresh", "rich flavor", "arrived well sealed", "perfect morning cup",
                "not too sweet", "my family devoured them"),
        "neg": ("tasted stale", "arrived expired", "the bag was torn open",
                "bitter aftertaste", "way too salty", "the bars were crushed"),
    },
    "jewelry": {
        "topic": ("this necklace", "the earrings", "the bracelet", "this ring", "the watch"),
        "pos": ("still shiny after months", "the clasp is secure", "looks more expensive than it is",
                "does not irritate my ears", "sparkles in the light", "fits my wrist nicely"),
        "neg": ("turned my skin green", "the clasp broke", "the plating wore off",
                "a stone fell out", "tarnished within days", "the chain kinked"),
    },
    "luggage": {
        "topic": ("this suitcase", "the backpack", "the carry on", "this duffel bag", "the travel bag"),
        "pos": ("the wheels roll smoothly", "fits in the overhead bin", "survived many flights",
                "lots of room for packing", "the straps are comfortable", "the zippers glide"),
        "neg": ("a wheel snapped off", "the handle jammed", "the shell cracked on the first trip",
                "the strap tore", "too big for the overhead bin", "the lining ripped"),
    },
    "video games": {
        "topic": ("this game", "the controller", "the headset", "this console", "the expansion"),
        "pos": ("the gameplay is addictive", "the controller feels responsive", "the story is gripping",
                "runs smoothly", "hours of fun with friends", "the graphics are stunning"),
        "neg": ("the game keeps crashing", "the joystick drifts", "the servers are always down",
                "full of bugs", "the story is short", "laggy online matches"),
    },
    "health": {
        "topic": ("this thermometer", "the vitamins", "the massager", "this scale", "the heating pad"),
        "pos": ("readings are accurate", "eased my back pain", "easy to swallow",
                "heats up quickly", "i sleep better now", "consistent readings"),
        "neg": ("readings are all over the place", "gave me a headache", "the pills are huge",
                "stopped heating", "the scale is inaccurate", "no difference at all"),
    },
}

# Generic sentiment words shared by all domains; negations flip the polarity of a phrase,
# which bag-of-words similarity reads the wrong way.
GENERIC_POSITIVE: tuple[str, ...] = (
    "great", "love it", "excellent", "highly recommend", "five stars", "very happy",
    "works perfectly", "worth every penny", "fantastic", "would buy again",
)
GENERIC_NEGATIVE: tuple[str, ...] = (
    "terrible", "very disappointed", "waste of money", "returning it", "one star",
    "poor quality", "do not buy", "awful", "regret buying", "total junk",
)
NEGATED_POSITIVE: tuple[str, ...] = (  # negative meaning, positive words
    "not great", "not worth it", "not happy", "would not recommend", "not impressed",
)
NEGATED_NEGATIVE: tuple[str, ...] = (  # positive meaning, negative words
    "not bad at all", "no complaints", "not disappointed", "cannot complain", "never had a problem",
)
FILLER: tuple[str, ...] = (
    "i bought this last month", "it arrived on tuesday", "ordered it for my sister",
    "i got the blue one", "used it a few times so far", "the box was plain brown cardboard",
    "bought it during a sale", "this is my second order from this seller", "delivery took four days",
    "my husband picked it out", "it came with a manual", "i compared several brands first",
    "we use it at the cabin", "the package had a coupon inside", "i ordered it on my phone",
    "it replaced an older one", "got it as a birthday gift", "shipping was standard",
)
MIXED_LINKS: tuple[str, ...] = ("but", "although", "even though", "however")
#: Longest review in words, so reviews stay under ~40 word pieces.
MAX_REVIEW_WORDS = 25


def _pick(rng: np.random.Generator, pool: Sequence[str]) -> str:
    return pool[int(rng.integers(len(pool)))]


def _check_fraction(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise DataError(f"synthetic: {name} must lie in [0, 1], got {value!r}")


def _flip_labels(rng: np.random.Generator, labels: np.ndarray, n_classes: int, noise: float) -> np.ndarray:
    """Replaces a ``noise`` fraction of labels by a uniformly drawn *other* class."""
    flip = rng.random(len(labels)) < noise
    shift = rng.integers(1, n_classes, size=len(labels))
    return np.where(flip, (labels + shift) % n_classes, labels)


def _source(fn: str, seed: int, knobs: dict[str, Any]) -> str:
    """The call that reproduces a corpus, recorded as its ``source``."""
    return f"metarec.data.synthetic.{fn}(seed={seed}, " + ", ".join(f"{k}={v!r}" for k, v in knobs.items()) + ")"


def make_catalog(
    seed: int = 0,
    n_categories: int = 24,
    per_category: int = 80,
    specific_words: int = 2,
    n_shared_words: int = 4,
    n_distractors: int = 4,
    distractor_rate: float = 0.75,
    decoy_fraction: float = 0.9,
    label_noise: float = 0.0,
) -> LabeledCorpus:
    """Generates product titles labeled with their product category.

    A title is a brand, then in shuffled order: ``specific_words`` phrases of its own
    category (head nouns or features), ``n_shared_words`` shared attribute phrases (colors,
    sizes, materials, marketing), and ``Binomial(n_distractors, distractor_rate)`` phrases
    typical of another category: with probability ``decoy_fraction`` an unlabeled decoy
    category (:data:`DECOY_PRODUCTS`), else another labeled category.

    Args:
        seed: seed of the only random generator used.
        n_categories: number of labeled categories, at most ``len(CATEGORIES)``; the first
            ones in ``CATEGORIES`` order, which interleaves departments.
        per_category: titles per category.
        specific_words: phrases of the title's own category (>= 1).
        n_shared_words: shared attribute phrases per title, besides the brand.
        n_distractors: most phrases of other categories per title.
        distractor_rate: probability of each of the ``n_distractors`` phrases.
        decoy_fraction: share of distractor phrases from decoy (never labeled) categories;
            the rest come from other labeled categories, which no learned map can discount.
        label_noise: fraction of labels replaced by a random other category.

    Returns:
        The corpus; ``groups`` are the departments of the (possibly noisy) labels and
        ``source`` is the call that reproduces it.

    Raises:
        DataError: for knobs out of range.
    """
    names = list(CATEGORIES)[:n_categories]
    if not 2 <= n_categories <= len(CATEGORIES):
        raise DataError(f"synthetic catalog: n_categories must lie in [2, {len(CATEGORIES)}], got {n_categories}")
    if specific_words < 1 or n_shared_words < 0 or n_distractors < 0 or per_category < 1:
        raise DataError("synthetic catalog: need specific_words >= 1, n_shared_words >= 0, "
                        "n_distractors >= 0, per_category >= 1")
    for k, v in dict(distractor_rate=distractor_rate, decoy_fraction=decoy_fraction, label_noise=label_noise).items():
        _check_fraction(k, v)
    rng = np.random.default_rng(seed)
    decoys = list(DECOY_PRODUCTS.values())
    texts, labels = [], []
    for c, cat in enumerate(names):
        _, nouns, features = CATEGORIES[cat]
        own = nouns + features
        for _ in range(per_category):
            parts = [own[i] for i in rng.choice(len(own), specific_words, replace=False)]
            for _ in range(int(rng.binomial(n_distractors, distractor_rate))):
                if rng.random() < decoy_fraction:
                    pool = decoys[int(rng.integers(len(decoys)))]
                else:
                    _, o_nouns, o_features = CATEGORIES[names[(c + int(rng.integers(1, n_categories))) % n_categories]]
                    pool = o_nouns + o_features
                parts.append(_pick(rng, pool))
            for _ in range(n_shared_words):  # shared phrases fill up to MAX_TITLE_WORDS, no further
                phrase = _pick(rng, SHARED_VOCABULARIES[int(rng.integers(len(SHARED_VOCABULARIES)))])
                if sum(len(p.split()) for p in parts) + len(phrase.split()) < MAX_TITLE_WORDS:
                    parts.append(phrase)
            texts.append(" ".join([_pick(rng, BRANDS)] + [parts[i] for i in rng.permutation(len(parts))]))
            labels.append(c)
    y = _flip_labels(rng, np.asarray(labels), n_categories, label_noise)
    departments = sorted({CATEGORIES[c][0] for c in names})
    dept_id = {d: i for i, d in enumerate(departments)}
    knobs = dict(n_categories=n_categories, per_category=per_category, specific_words=specific_words,
                 n_shared_words=n_shared_words, n_distractors=n_distractors, distractor_rate=distractor_rate,
                 decoy_fraction=decoy_fraction, label_noise=label_noise)
    return LabeledCorpus(
        texts=texts,
        labels=y,
        label_names=names,
        groups=np.array([dept_id[CATEGORIES[names[i]][0]] for i in y]),
        group_names=departments,
        name="synthetic_catalog",
        source=_source("make_catalog", seed, knobs),
    )


def make_reviews(
    seed: int = 0,
    n_domains: int = 16,
    per_domain: int = 120,
    n_aspects: int = 1,
    generic_rate: float = 0.5,
    negation_rate: float = 0.3,
    mixed_rate: float = 0.3,
    n_filler: int = 2,
    label_noise: float = 0.0,
) -> LabeledCorpus:
    """Generates product reviews labeled negative (0) / positive (1), grouped by domain.

    A review names a domain topic ("the blender") and holds ``n_aspects`` domain-specific
    aspect phrases of its polarity, with probability ``generic_rate`` a generic sentiment
    phrase (negated with probability ``negation_rate``: "not great" in a negative review),
    with probability ``mixed_rate`` a contrasting aspect of the other polarity ("but the
    handle got too hot"), and ``n_filler`` shared neutral clauses, in shuffled order.

    Args:
        seed: seed of the only random generator used.
        n_domains: number of domains, at most ``len(DOMAINS)``, the first in ``DOMAINS`` order.
        per_domain: reviews per domain, half of each polarity (the odd one is positive).
        n_aspects: aspect phrases of the review's own polarity (>= 1).
        generic_rate: probability of a generic sentiment phrase.
        negation_rate: probability that the generic phrase is a negated opposite.
        mixed_rate: probability of one contrasting aspect of the other polarity.
        n_filler: shared neutral clauses per review.
        label_noise: fraction of labels flipped.

    Returns:
        The corpus; ``label_names == ["negative", "positive"]``, ``groups`` are domains.

    Raises:
        DataError: for knobs out of range.
    """
    domains = list(DOMAINS)
    if not 1 <= n_domains <= len(domains):
        raise DataError(f"synthetic reviews: n_domains must lie in [1, {len(domains)}], got {n_domains}")
    if n_aspects < 1 or n_filler < 0 or per_domain < 2:
        raise DataError("synthetic reviews: need n_aspects >= 1, n_filler >= 0, per_domain >= 2")
    for k, v in dict(generic_rate=generic_rate, negation_rate=negation_rate, mixed_rate=mixed_rate,
                     label_noise=label_noise).items():
        _check_fraction(k, v)
    rng = np.random.default_rng(seed)
    domains = domains[:n_domains]
    texts, labels, groups = [], [], []
    for g, dom in enumerate(domains):
        vocab = DOMAINS[dom]
        for label in rng.permutation((np.arange(per_domain) + 1) % 2):  # balanced, shuffled
            own, other = (vocab["pos"], vocab["neg"]) if label else (vocab["neg"], vocab["pos"])
            topic = f"{_pick(rng, vocab['topic'])}:"
            clauses = [own[i] for i in rng.choice(len(own), n_aspects, replace=False)]
            if rng.random() < generic_rate:
                negated = rng.random() < negation_rate
                pool = (NEGATED_NEGATIVE if negated else GENERIC_POSITIVE) if label else (
                    NEGATED_POSITIVE if negated else GENERIC_NEGATIVE)
                clauses.append(_pick(rng, pool))
            contrast = f" {_pick(rng, MIXED_LINKS)} {_pick(rng, other)}" if rng.random() < mixed_rate else ""
            used = len(topic.split()) + len(contrast.split()) + sum(len(c.split()) for c in clauses)
            for i in rng.choice(len(FILLER), n_filler, replace=False):  # filler up to MAX_REVIEW_WORDS
                if used + len(FILLER[i].split()) <= MAX_REVIEW_WORDS:
                    clauses.append(FILLER[i])
                    used += len(FILLER[i].split())
            clauses = [clauses[i] for i in rng.permutation(len(clauses))]
            clauses[-1] += contrast  # the contrast comes last, as reviewers write it
            texts.append(f"{topic} " + ", ".join(clauses))
            labels.append(int(label))
            groups.append(g)
    y = _flip_labels(rng, np.asarray(labels), 2, label_noise)
    knobs = dict(n_domains=n_domains, per_domain=per_domain, n_aspects=n_aspects, generic_rate=generic_rate,
                 negation_rate=negation_rate, mixed_rate=mixed_rate, n_filler=n_filler, label_noise=label_noise)
    return LabeledCorpus(
        texts=texts,
        labels=y,
        label_names=["negative", "positive"],
        groups=np.asarray(groups),
        group_names=domains,
        name="synthetic_reviews",
        source=_source("make_reviews", seed, knobs),
    )


def _knobs(fn: Callable[..., LabeledCorpus], given: dict[str, Any]) -> dict[str, Any]:
    """All knobs of generator ``fn`` (defaults filled in), for the family's metadata."""
    params = inspect.signature(fn).parameters
    unknown = sorted(set(given) - set(params))
    if unknown:
        raise DataError(f"synthetic: unknown knob(s) {unknown} for {fn.__name__}; known: {sorted(params)}")
    return {k: given.get(k, p.default) for k, p in params.items() if k != "seed"}


#: Fractions of categories (category family) and domains (sentiment family) per split:
#: 11 / 5 / 8 of 24 categories (val needs 5 for 5-way), 10 / 2 / 4 of 16 domains.
CATEGORY_SPLIT: tuple[float, float, float] = (11 / 24, 5 / 24, 8 / 24)
SENTIMENT_SPLIT: tuple[float, float, float] = (10 / 16, 2 / 16, 4 / 16)


@FAMILIES.register("synthetic_category")
def synthetic_category(seed: int = 0, **knobs: Any) -> TaskFamily:
    """Product-category classification with unseen test categories (a class split).

    Args:
        seed: data seed; also the seed of the category split, so the split never depends
            on a training seed.
        **knobs: passed to :func:`make_catalog`.

    Returns:
        A synthetic family with one task per split.
    """
    all_knobs = _knobs(make_catalog, knobs)  # first: names an unknown knob clearly
    corpus = make_catalog(seed=seed, **knobs)
    parts = split_ids(list(range(len(corpus.label_names))), CATEGORY_SPLIT, seed=seed)
    split = dict(zip(("train", "val", "test"), parts))
    metadata = {"generator": "make_catalog", "seed": seed, "knobs": all_knobs,
                "split": {k: [corpus.label_names[c] for c in v] for k, v in split.items()}}
    return TaskFamily.from_class_split("synthetic_category", corpus, split, synthetic=True, metadata=metadata)


@FAMILIES.register("synthetic_sentiment")
def synthetic_sentiment(seed: int = 0, **knobs: Any) -> TaskFamily:
    """Binary review sentiment with unseen test domains (a group split).

    Args:
        seed: data seed; also the seed of the domain split.
        **knobs: passed to :func:`make_reviews`.

    Returns:
        A synthetic family with one task per domain.
    """
    all_knobs = _knobs(make_reviews, knobs)
    corpus = make_reviews(seed=seed, **knobs)
    domains = corpus.group_names or []
    parts = split_ids(list(range(len(domains))), SENTIMENT_SPLIT, seed=seed)
    split = dict(zip(("train", "val", "test"), parts))
    metadata = {"generator": "make_reviews", "seed": seed, "knobs": all_knobs,
                "split": {k: [domains[g] for g in v] for k, v in split.items()}}
    return TaskFamily.from_group_split("synthetic_sentiment", corpus, split, synthetic=True, metadata=metadata)


# Where the **knobs go: config validation reads the accepted keys there.
synthetic_category.kwargs_target = make_catalog  # type: ignore[attr-defined]
synthetic_sentiment.kwargs_target = make_reviews  # type: ignore[attr-defined]
