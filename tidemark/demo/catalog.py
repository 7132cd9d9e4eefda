"""Reference data and rules shared by the history seed and the OLTP load of the demo source.

One place for what both generators must agree on: the outbox event types, how an event is made
malformed, the payment methods, and the validation of the late/duplicate/malformed shares.
"""

from __future__ import annotations

from tidemark.errors import DemoInputError

EVENT_TYPES = ("session_started", "cart_item_added", "checkout_started")
PLATFORMS = ("ios", "android", "web")

DEFAULT_LATE_SHARE = 0.1
# Share of orders placed on an earlier day, after its end plus the orders' allowed lateness
# (2 h): late data beyond allowed lateness, recorded and corrected (issue 14).
DEFAULT_BEYOND_LATENESS_SHARE = 0.01
# Such an order's placed_at lies this far before today's midnight (UTC), uniform in between.
BEYOND_LATENESS_BEFORE_MIDNIGHT_S = (600.0, 6 * 3600.0)
DEFAULT_DUPLICATE_SHARE = 0.02
DEFAULT_MALFORMED_SHARE = 0.02

# A late event's event_time lies this far before received_at (log-uniform in between).
LATE_MIN_S = 120.0
LATE_MAX_S = 6 * 3600.0
# An on-time event reaches the backend within this many seconds.
ON_TIME_MAX_S = 3.0

# How an event breaks its payload contract: drop a required key and/or set a key to a value of
# the wrong type, out of range or outside its enum. Applied the same way in SQL (seed) and in
# Python (load): payload := (payload - drop) || set.
MALFORMATIONS: dict[str, list[dict]] = {
    "session_started": [
        {"drop": "app_version"},
        {"set": {"platform": "blackberry"}},
        {"set": {"app_version": 4}},
    ],
    "cart_item_added": [
        {"set": {"quantity": "three"}},
        {"set": {"quantity": 0}},
        {"set": {"quantity": -2}},
        {"drop": "product_id"},
    ],
    "checkout_started": [
        {"set": {"item_count": 0}},
        {"set": {"cart_value": "12.50"}},
        {"drop": "cart_id"},
        {"set": {"cart_value": -5}},
    ],
}

# Payment methods with their cumulative shares (card 70 %, wallet 22 %, voucher 8 %).
PAYMENT_METHODS = (("card", 0.70), ("wallet", 0.92), ("voucher", 1.0))

CATEGORIES = {
    "produce": ("Apples", "Bananas", "Carrots", "Tomatoes", "Spinach", "Avocados", "Lemons"),
    "dairy": ("Milk", "Yogurt", "Butter", "Cheddar", "Cream", "Kefir"),
    "bakery": ("Sourdough", "Bagels", "Croissants", "Rye Bread", "Muffins"),
    "meat": ("Chicken Breast", "Ground Beef", "Pork Chops", "Sausages", "Turkey Slices"),
    "seafood": ("Salmon", "Shrimp", "Cod", "Tuna Steak"),
    "pantry": ("Pasta", "Rice", "Olive Oil", "Flour", "Lentils", "Tomato Sauce", "Oats"),
    "frozen": ("Pizza", "Peas", "Ice Cream", "Dumplings", "Berries"),
    "beverages": ("Orange Juice", "Coffee", "Green Tea", "Sparkling Water", "Cola"),
    "snacks": ("Crisps", "Dark Chocolate", "Almonds", "Granola Bars", "Popcorn"),
    "household": ("Dish Soap", "Paper Towels", "Detergent", "Sponges", "Trash Bags"),
    "baby": ("Diapers", "Baby Wipes", "Baby Food"),
    "pets": ("Dog Food", "Cat Litter", "Cat Food"),
}
BRANDS = ("Fresh Fields", "Daily Basket", "Green Leaf", "Harbor", "Sunrise", "Nordic",
          "Urban Pantry", "Hilltop")
TAGS = ("organic", "vegan", "gluten-free", "local", "bestseller", "new", "discount")

# (city, region) of the stores; customers live in their home store's city.
CITIES = (("Amsterdam", "north"), ("Rotterdam", "west"), ("Utrecht", "central"),
          ("Eindhoven", "south"), ("Groningen", "north"), ("The Hague", "west"),
          ("Tilburg", "south"), ("Arnhem", "east"), ("Nijmegen", "east"), ("Leiden", "west"))
FIRST_NAMES = ("Anna", "Bram", "Chloe", "Daan", "Emma", "Finn", "Gwen", "Hugo", "Iris", "Jesse",
               "Julia", "Lars", "Lotte", "Milan", "Noor", "Olaf", "Puck", "Ruben", "Sara", "Tim",
               "Vera", "Wout", "Yara", "Zoe")
LAST_NAMES = ("de Jong", "Jansen", "de Vries", "van Dijk", "Bakker", "Visser", "Smit", "Meijer",
              "Mulder", "de Boer", "Bos", "Vos", "Peters", "Hendriks", "Dekker", "Brouwer")
DELIVERY_NOTES = ("Leave at the door", "Ring twice", "Call on arrival", "Back entrance",
                  "No plastic bags please")


def validate_shares(late_share: float, duplicate_share: float, malformed_share: float) -> None:
    """Check the shares of late, duplicated and malformed outbox events.

    Args:
        late_share: share of events whose event_time is minutes to hours before received_at.
        duplicate_share: share of events emitted a second time (same event_id and content).
        malformed_share: share of events whose payload breaks its contract.

    Raises:
        DemoInputError: a share is outside [0, 1] or the three add up to more than 1.
    """
    shares = {"late share": late_share, "duplicate share": duplicate_share,
              "malformed share": malformed_share}
    for name, value in shares.items():
        if not 0.0 <= value <= 1.0:
            raise DemoInputError(
                f"The {name} must be between 0 and 1 (a fraction of the outbox events); "
                f"got {value:g}. Example: --{name.split()[0]}-share 0.05 for 5 %.")
    total = late_share + duplicate_share + malformed_share
    if total > 1.0 + 1e-9:
        raise DemoInputError(
            f"The late, duplicate and malformed shares add up to {total:g}, more than 1: at "
            f"most every event can be irregular. Lower one of them.")
