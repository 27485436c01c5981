"""Reference tables the simulator draws from: provinces, names, catalogue, brands, mixes.

Plain data, tuned to the real Fashion Campus files (SPEC section 1)."""
from __future__ import annotations

from types import MappingProxyType

#: The real data's event mix (SPEC section 1), in percent; the generator is tuned to it.
EVENT_MIX_TARGET = MappingProxyType({
    "CLICK": 19.5, "HOMEPAGE": 19.4, "ADD_TO_CART": 15.1, "SCROLL": 13.0,
    "ITEM_DETAIL": 10.1, "SEARCH": 9.1, "BOOKING": 6.6, "PROMO_PAGE": 4.7,
    "ADD_PROMO": 2.5,
})


# ------------------------------------------------------------------ reference tables

#: (province, centre latitude, centre longitude, population in millions) - the 34
#: provinces as named in the real data; population weights where customers live.
PROVINCES = (
    ("Aceh", 4.6951, 96.7494, 5.3), ("Sumatera Utara", 2.1154, 99.5451, 14.8),
    ("Sumatera Barat", -0.7399, 100.8000, 5.5), ("Riau", 0.2933, 101.7068, 6.4),
    ("Kepulauan Riau", 3.9457, 108.1429, 2.1), ("Jambi", -1.4852, 102.4381, 3.5),
    ("Sumatera Selatan", -3.3194, 103.9144, 8.5), ("Bangka Belitung", -2.7411, 106.4406, 1.5),
    ("Bengkulu", -3.5778, 102.3464, 2.0), ("Lampung", -4.5586, 105.4068, 9.0),
    ("Jakarta Raya", -6.2088, 106.8456, 10.6), ("Banten", -6.4058, 106.0640, 11.9),
    ("Jawa Barat", -7.0909, 107.6689, 48.3), ("Jawa Tengah", -7.1510, 110.1403, 36.5),
    ("Daerah Istimewa Yogyakarta", -7.8754, 110.4262, 3.7),
    ("Jawa Timur", -7.5361, 112.2384, 40.7), ("Bali", -8.3405, 115.0920, 4.3),
    ("Nusa Tenggara Barat", -8.6529, 117.3616, 5.3),
    ("Nusa Tenggara Timur", -8.6574, 121.0794, 5.3),
    ("Kalimantan Barat", -0.2788, 111.4753, 5.4), ("Kalimantan Tengah", -1.6815, 113.3824, 2.7),
    ("Kalimantan Selatan", -3.0926, 115.2838, 4.1), ("Kalimantan Timur", 0.5387, 116.4194, 3.8),
    ("Kalimantan Utara", 3.0731, 116.0414, 0.7), ("Sulawesi Utara", 0.6247, 123.9750, 2.6),
    ("Gorontalo", 0.6999, 122.4467, 1.2), ("Sulawesi Tengah", -1.4300, 121.4456, 3.0),
    ("Sulawesi Barat", -2.8441, 119.2321, 1.4), ("Sulawesi Selatan", -3.6688, 119.9741, 9.1),
    ("Sulawesi Tenggara", -4.1449, 122.1746, 2.6), ("Maluku", -3.2385, 130.1453, 1.8),
    ("Maluku Utara", 1.5710, 127.8088, 1.3), ("Papua", -4.2699, 138.0804, 4.3),
    ("Papua Barat", -1.3361, 133.1747, 1.1),
)

FIRST_NAMES_F = ("Siti", "Dewi", "Putri", "Ayu", "Rina", "Lala", "Indah", "Sri", "Wulan",
                 "Nur", "Fitri", "Maya", "Ratna", "Intan", "Kartika", "Citra", "Mega",
                 "Nadia", "Anisa", "Lestari", "Yuliana", "Rahmawati", "Dian", "Novi",
                 "Eka", "Amalia", "Shinta", "Clara", "Gita", "Salsabila")
FIRST_NAMES_M = ("Budi", "Agus", "Andi", "Dimas", "Rizky", "Fajar", "Hendra", "Joko",
                 "Bayu", "Eko", "Ahmad", "Muhammad", "Adi", "Yoga", "Galih", "Reza",
                 "Arif", "Taufik", "Wahyu", "Irfan", "Kevin", "Dodi", "Hadi", "Rudi",
                 "Bambang", "Gilang", "Aditya", "Teguh", "Ilham", "Rangga")
LAST_NAMES = ("Santoso", "Wijaya", "Saputra", "Pratama", "Hidayat", "Kurniawan", "Setiawan",
              "Nugroho", "Lestari", "Maryati", "Susanti", "Siregar", "Nasution", "Simanjuntak",
              "Harahap", "Gunawan", "Halim", "Wibowo", "Purnomo", "Suryadi", "Hakim",
              "Utami", "Rahayu", "Putra", "Sihombing", "Tanjung", "Firmansyah", "Permana",
              "Kusuma", "Salim", "Hutapea", "Wahyudi", "Ramadhan", "Pangestu", "Sinaga")
ANDROID_VERSIONS = ("Android 5.1.1", "Android 6.0", "Android 7.0", "Android 7.1.2",
                    "Android 8.0.0", "Android 8.1.0", "Android 9", "Android 10",
                    "Android 11", "Android 12")
IOS_VERSIONS = tuple(f"iPhone; CPU iPhone OS {v} like Mac OS X"
                     for v in ("12_4", "13_3", "14_2", "14_8", "15_1", "15_5"))

#: (masterCategory, subCategory, articleType, noun in names, genders, usages, median price IDR)
CATALOG = (
    ("Apparel", "Topwear", "Tshirts", "T-shirt", "MWUBG", ("Casual", "Sports"), 150_000),
    ("Apparel", "Topwear", "Shirts", "Shirt", "MWB", ("Casual", "Formal", "Party"), 250_000),
    ("Apparel", "Topwear", "Tops", "Top", "WG", ("Casual", "Party"), 180_000),
    ("Apparel", "Topwear", "Kurtas", "Kurta", "MW", ("Ethnic",), 280_000),
    ("Apparel", "Topwear", "Sweatshirts", "Sweatshirt", "MWU", ("Casual", "Sports"), 320_000),
    ("Apparel", "Topwear", "Jackets", "Jacket", "MWU", ("Casual", "Sports"), 450_000),
    ("Apparel", "Bottomwear", "Jeans", "Jeans", "MWB", ("Casual", "Party"), 350_000),
    ("Apparel", "Bottomwear", "Trousers", "Trousers", "MW", ("Formal", "Casual"), 300_000),
    ("Apparel", "Bottomwear", "Shorts", "Shorts", "MWBG", ("Casual", "Sports"), 160_000),
    ("Apparel", "Bottomwear", "Track Pants", "Track Pants", "MWU", ("Sports",), 220_000),
    ("Apparel", "Bottomwear", "Skirts", "Skirt", "WG", ("Casual",), 200_000),
    ("Apparel", "Dress", "Dresses", "Dress", "WG", ("Casual", "Party"), 380_000),
    ("Apparel", "Innerwear", "Briefs", "Briefs", "M", ("Casual",), 80_000),
    ("Apparel", "Innerwear", "Bra", "Bra", "W", ("Casual",), 120_000),
    ("Apparel", "Loungewear and Nightwear", "Night suits", "Night Suit", "WG", ("Casual",),
     210_000),
    ("Apparel", "Saree", "Sarees", "Saree", "W", ("Ethnic", "Party"), 420_000),
    ("Footwear", "Shoes", "Casual Shoes", "Casual Shoes", "MWU", ("Casual",), 450_000),
    ("Footwear", "Shoes", "Sports Shoes", "Sports Shoes", "MWUB", ("Sports",), 600_000),
    ("Footwear", "Shoes", "Formal Shoes", "Formal Shoes", "M", ("Formal",), 550_000),
    ("Footwear", "Shoes", "Heels", "Heels", "W", ("Casual", "Party"), 400_000),
    ("Footwear", "Shoes", "Flats", "Flats", "WG", ("Casual",), 250_000),
    ("Footwear", "Sandal", "Sandals", "Sandals", "MWBG", ("Casual",), 200_000),
    ("Footwear", "Flip Flops", "Flip Flops", "Flip Flops", "MWU", ("Casual",), 90_000),
    ("Accessories", "Watches", "Watches", "Watch", "MWU", ("Casual", "Formal"), 900_000),
    ("Accessories", "Bags", "Handbags", "Handbag", "W", ("Casual", "Party"), 550_000),
    ("Accessories", "Bags", "Backpacks", "Backpack", "MU", ("Casual", "Travel"), 400_000),
    ("Accessories", "Bags", "Clutches", "Clutch", "W", ("Party",), 300_000),
    ("Accessories", "Belts", "Belts", "Belt", "MW", ("Casual", "Formal"), 150_000),
    ("Accessories", "Eyewear", "Sunglasses", "Sunglasses", "MWU", ("Casual",), 700_000),
    ("Accessories", "Wallets", "Wallets", "Wallet", "MW", ("Casual",), 180_000),
    ("Accessories", "Jewellery", "Earrings", "Earrings", "W", ("Casual", "Party"), 120_000),
    ("Accessories", "Jewellery", "Necklace and Chains", "Necklace", "W", ("Party", "Ethnic"),
     250_000),
    ("Accessories", "Socks", "Socks", "Socks", "MWU", ("Casual", "Sports"), 50_000),
    ("Accessories", "Headwear", "Caps", "Cap", "MU", ("Casual", "Sports"), 110_000),
    ("Personal Care", "Fragrance", "Perfume and Body Mist", "Perfume", "MW", ("Casual",), 350_000),
    ("Personal Care", "Fragrance", "Deodorant", "Deodorant", "MW", ("Casual",), 60_000),
    ("Personal Care", "Lips", "Lipstick", "Lipstick", "W", ("Casual",), 110_000),
    ("Personal Care", "Nails", "Nail Polish", "Nail Polish", "W", ("Casual",), 70_000),
)

#: (brand, master categories it sells) - multi-word brands on purpose, since brand
#: extraction from productDisplayName is part of the pipeline.
BRANDS = (
    ("Puma", "AF"), ("Nike", "AF"), ("Adidas", "AF"), ("Reebok", "AF"), ("Fila", "AF"),
    ("Lotto", "F"), ("Peter England", "AF"), ("Louis Philippe", "AF"), ("Van Heusen", "AF"),
    ("Allen Solly", "AF"), ("United Colors of Benetton", "AFX"), ("Wrangler", "AX"),
    ("Levis", "AX"), ("Lee", "AF"), ("Jealous 21", "A"), ("Fabindia", "A"), ("Arrow", "A"),
    ("Flying Machine", "A"), ("Spykar", "A"), ("Proline", "A"), ("Inkfruit", "A"),
    ("Do u speak green", "A"), ("Gini and Jony", "A"), ("Scullers", "A"), ("John Miller", "A"),
    ("Titan", "X"), ("Fastrack", "XF"), ("Baggit", "X"), ("Lavie", "X"), ("Kiara", "X"),
    ("Carlton London", "FX"), ("Red Tape", "F"), ("Woodland", "F"), ("Catwalk", "F"),
    ("Bata", "F"), ("Crocs", "F"), ("Lakme", "P"), ("Maybelline", "P"), ("Davidoff", "P"),
    ("Axe", "P"), ("Park Avenue", "AP"), ("Wildcraft", "XF"),
)

COLOURS = ("Black", "White", "Blue", "Navy Blue", "Grey", "Red", "Brown", "Green", "Pink",
           "Purple", "Silver", "Beige", "Yellow", "Maroon", "Olive", "Charcoal", "Gold",
           "Orange", "Teal", "Cream")
COLOUR_WEIGHTS = (18, 12, 14, 8, 8, 6, 6, 5, 5, 3, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1)
SEASONS = ("Summer", "Fall", "Winter", "Spring")
SEASON_WEIGHTS = (48, 26, 19, 7)
GENDER_NAMES = MappingProxyType({"M": "Men", "W": "Women", "U": "Unisex", "B": "Boys",
                                 "G": "Girls"})
#: what follows the unquoted comma in the few broken product names (one or two commas)
BROKEN_NAME_SUFFIXES = ("Pack of 2", "Set of 3", "Regular Fit", "Pack of 3, Assorted",
                        "Combo of 2, Multicolour")

#: how strongly a female / male customer is drawn to products of each gender
GENDER_AFFINITY = MappingProxyType({
    "F": MappingProxyType({"Women": 1.0, "Unisex": 0.35, "Girls": 0.15, "Men": 0.05, "Boys": 0.05}),
    "M": MappingProxyType({"Men": 1.0, "Unisex": 0.35, "Boys": 0.12, "Women": 0.05, "Girls": 0.04}),
})

PAYMENT_METHODS = ("Credit Card", "Debit Card", "OVO", "Gopay", "LinkAja")
PAYMENT_WEIGHTS = (30, 17, 20, 23, 10)
PROMO_CODES = ("WEEKENDSERU", "AZ2022", "BUYMORE", "LIBURDONG", "SC2022", "STARTUPTEN",
               "XX2022", "WEEKENDMANTAP")
GENERIC_SEARCHES = ("baju wanita", "kaos polos", "sepatu pria", "tas wanita", "jam tangan",
                    "celana jeans", "dress pesta", "kemeja pria", "sandal", "jaket",
                    "diskon", "promo", "sepatu olahraga", "kacamata", "dompet", "parfum",
                    "hijab", "batik", "sneakers", "tas ransel")
#: local (WIB, UTC+7) hour-of-day activity weights: quiet nights, evening peak
LOCAL_HOUR_WEIGHTS = (1.0, 0.6, 0.4, 0.3, 0.3, 0.5, 1.0, 2.0, 3.0, 3.5, 4.0, 4.5,
                      5.0, 5.0, 4.5, 4.5, 4.5, 5.0, 6.0, 7.0, 7.5, 7.0, 5.0, 2.5)

# Session grammar. Filler events are plain browsing before an add; an approach path is
# what the shopper does right before adding (mostly ends in an inferable event). The
# weights (and Knobs.filler_per_add / atc_per_round) are tuned so that the whole mix
# lands within ~1 point of EVENT_MIX_TARGET (checked by the tests).
FILLER_WEIGHTS = (("SCROLL", 27), ("HOMEPAGE", 22), ("CLICK", 20), ("SEARCH", 17),
                  ("ITEM_DETAIL", 9), ("PROMO_PAGE", 5))
APPROACH_PATHS = ((("CLICK",), 22), (("ITEM_DETAIL",), 10), (("CLICK", "ITEM_DETAIL"), 18),
                  (("HOMEPAGE", "CLICK"), 12), (("SEARCH", "CLICK", "ITEM_DETAIL"), 12),
                  (("HOMEPAGE",), 10), (("SCROLL", "CLICK"), 8), ((), 8))
QUANTITY_WEIGHTS = ((1, 70), (2, 18), (3, 7), (4, 3), (5, 2))

