"""The simulated store's catalogue: a specialty coffee shop with bundles that customers buy together.

Fixed data (not drawn from the seed): every simulated run sells the same products, as one real store would,
so co-purchase reports and recommendations accumulate across runs.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True)
class Product:
    product_id: int
    variant_id: int
    sku: str
    title: str
    category: str
    price: Decimal
    # Relative popularity when a shopper picks freely; bundles and favourites come on top.
    popularity: int
    # Coffee and tea run out: loyal customers reorder them (what a replenishment reminder is for).
    consumable: bool = False


@dataclass(frozen=True)
class Bundle:
    name: str
    product_ids: tuple[int, ...]


@dataclass(frozen=True)
class BasketLine:
    product: Product
    quantity: int

    @property
    def total(self) -> Decimal:
        return self.product.price * self.quantity


_FIRST_ID = 8_100_000_001


def _products() -> tuple[Product, ...]:
    rows: list[tuple[str, str, str, int, bool]] = [
        # title, category, price, popularity, consumable
        ("House Espresso Blend 1kg", "coffee", "32.00", 14, True),
        ("House Espresso Blend 250g", "coffee", "11.50", 12, True),
        ("Ethiopia Yirgacheffe 250g", "coffee", "14.90", 10, True),
        ("Colombia Huila 250g", "coffee", "13.50", 9, True),
        ("Kenya AA Kiambu 250g", "coffee", "16.00", 6, True),
        ("Brazil Cerrado 1kg", "coffee", "27.00", 7, True),
        ("Guatemala Antigua 250g", "coffee", "13.90", 6, True),
        ("Decaf Swiss Water 250g", "coffee", "12.90", 4, True),
        ("Cold Brew Coarse Grind 500g", "coffee", "15.50", 5, True),
        ("Single-Origin Discovery Box", "coffee", "29.00", 5, True),
        ("Sumatra Mandheling 250g", "coffee", "14.50", 3, True),
        ("Rwanda Nyamasheke 250g", "coffee", "15.20", 3, True),
        ("Conical Burr Grinder", "equipment", "149.00", 4, False),
        ("Hand Grinder Pro", "equipment", "89.00", 4, False),
        ("Ceramic Pour-Over Dripper", "equipment", "24.00", 6, False),
        ("Gooseneck Kettle 1L", "equipment", "69.00", 4, False),
        ("French Press 8 Cup", "equipment", "35.00", 5, False),
        ("AeroPress Travel Kit", "equipment", "45.00", 5, False),
        ("Cold Brew Jar 1.5L", "equipment", "32.00", 3, False),
        ("Digital Brew Scale", "equipment", "39.00", 4, False),
        ("Moka Pot 6 Cup", "equipment", "42.00", 3, False),
        ("Home Espresso Machine", "equipment", "449.00", 1, False),
        ("Paper Filters (100)", "accessories", "6.50", 9, True),
        ("Stainless Steel Tamper", "accessories", "29.00", 3, False),
        ("Milk Frothing Jug 600ml", "accessories", "19.00", 4, False),
        ("Everyday Ceramic Mug", "accessories", "18.00", 8, False),
        ("Double-Wall Glass Cup (2)", "accessories", "22.00", 5, False),
        ("Travel Tumbler 350ml", "accessories", "27.00", 5, False),
        ("Descaling Powder", "accessories", "9.90", 4, True),
        ("Knock Box", "accessories", "24.50", 2, False),
        ("Airtight Bean Canister", "accessories", "26.00", 4, False),
        ("Loose-Leaf Sencha 100g", "tea", "12.00", 5, True),
        ("Earl Grey Supreme 100g", "tea", "10.50", 5, True),
        ("Masala Chai Blend 100g", "tea", "11.00", 4, True),
        ("Cast-Iron Teapot", "tea", "48.00", 2, False),
        ("Tea Infuser Basket", "tea", "8.00", 4, False),
        ("Dark Chocolate Bar 70%", "pantry", "5.50", 6, True),
        ("Almond Biscotti Tin", "pantry", "9.00", 4, True),
        ("Gift Card 50", "gifts", "50.00", 2, False),
        ("Barista Workshop Voucher", "gifts", "79.00", 1, False),
    ]
    return tuple(
        Product(
            product_id=_FIRST_ID + i,
            variant_id=_FIRST_ID + 1000 + i,
            sku=f"LF-{category[:3].upper()}-{i + 1:03d}",
            title=title,
            category=category,
            price=Decimal(price),
            popularity=popularity,
            consumable=consumable,
        )
        for i, (title, category, price, popularity, consumable) in enumerate(rows)
    )


PRODUCTS: tuple[Product, ...] = _products()
BY_TITLE: dict[str, Product] = {p.title: p for p in PRODUCTS}
BY_ID: dict[int, Product] = {p.product_id: p for p in PRODUCTS}
CATEGORIES: tuple[str, ...] = tuple(dict.fromkeys(p.category for p in PRODUCTS))


def _bundle(name: str, *titles: str) -> Bundle:
    return Bundle(name=name, product_ids=tuple(BY_TITLE[t].product_id for t in titles))


BUNDLES: tuple[Bundle, ...] = (
    _bundle(
        "Pour-over starter", "Ceramic Pour-Over Dripper", "Paper Filters (100)", "Ethiopia Yirgacheffe 250g"
    ),
    _bundle("Espresso corner", "Conical Burr Grinder", "Stainless Steel Tamper", "House Espresso Blend 1kg"),
    _bundle("Cold brew kit", "Cold Brew Jar 1.5L", "Cold Brew Coarse Grind 500g"),
    _bundle("Tea ritual", "Cast-Iron Teapot", "Loose-Leaf Sencha 100g", "Tea Infuser Basket"),
    _bundle("Gift box", "Everyday Ceramic Mug", "Single-Origin Discovery Box", "Dark Chocolate Bar 70%"),
    _bundle("Latte at home", "Milk Frothing Jug 600ml", "Moka Pot 6 Cup", "House Espresso Blend 250g"),
)

# Share of baskets that are one of the bundles (plus, sometimes, one more item).
BUNDLE_SHARE = 0.3


# Which category a shopper comes for: most come for the coffee.
FAVOURITE_WEIGHTS: dict[str, int] = {
    "coffee": 10, "equipment": 5, "accessories": 4, "tea": 3, "pantry": 1, "gifts": 1,
}  # fmt: skip


def pick_favourite_category(rng: random.Random) -> str:
    names = list(FAVOURITE_WEIGHTS)
    return rng.choices(names, weights=[FAVOURITE_WEIGHTS[n] for n in names], k=1)[0]


def _weighted(rng: random.Random, products: list[Product], favourite: str | None) -> Product:
    # A shopper's favourite category triples its products' weights: people keep buying what they like.
    weights = [p.popularity * (3 if p.category == favourite else 1) for p in products]
    return rng.choices(products, weights=weights, k=1)[0]


def pick_product(rng: random.Random, favourite: str | None = None) -> Product:
    return _weighted(rng, list(PRODUCTS), favourite)


def pick_basket(
    rng: random.Random, favourite: str | None = None, usual: Product | None = None
) -> tuple[BasketLine, ...]:
    """What one order (or cart) holds. `usual`: the consumable a returning customer reorders."""
    chosen: list[Product] = []
    if usual is not None and rng.random() < 0.7:
        chosen.append(usual)
    elif rng.random() < BUNDLE_SHARE:
        bundle = rng.choice(BUNDLES)
        chosen.extend(BY_ID[i] for i in bundle.product_ids)
    extra = rng.choices((0, 1, 2), weights=(5, 4, 1), k=1)[0] if chosen else rng.choice((1, 1, 1, 2, 2, 3))
    for _ in range(extra):
        product = _weighted(rng, [p for p in PRODUCTS if p not in chosen], favourite)
        chosen.append(product)
    return tuple(
        BasketLine(
            product=p, quantity=rng.choices((1, 2, 3), weights=(8, 2, 1), k=1)[0] if p.consumable else 1
        )
        for p in chosen
    )


def basket_total(lines: tuple[BasketLine, ...]) -> Decimal:
    return sum((line.total for line in lines), Decimal("0"))
