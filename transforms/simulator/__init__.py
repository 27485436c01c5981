"""A deterministic simulator of the Fashion Campus shop (``shopstream generate``).

It writes the four input tables of SPEC section 1 in the real files' CSV dialect (column
headers from :mod:`transforms.records`) and, apart from them under ``ground_truth/``,
the hidden truth they were drawn from, so models can be scored against a ceiling.

It lives in ``transforms`` because it needs only the records contract and must be
importable by every layer's tests and by the CLI; it is not a pipeline.

How the world works:

* Every product has a latent popularity (lognormal) and a trend (its popularity drifts
  week by week). It drives which products are put in carts; carts that are *not* booked
  follow a flatter version of it, so engagement predicts purchases, not perfectly.
* About half of the customers are buyers. A buyer lives month by month
  (:mod:`transforms.simulator.customers`): sessions arrive at a rate that decays over its
  life and moves with a latent visit multiplier; bookings use a promo code, fail or pay
  a shipment fee with customer-specific propensities. At every month end it churns with
  a hazard that mixes recency, failed payments, promo dependence, shipment fees, a
  falling visit rate, abandoned carts, engagement and an unobservable frailty
  (``HAZARD_WEIGHTS``). Only sessions with a booking can be tied to a customer, so
  engagement is only partly observable and the true hazard is a real ceiling.
* The others browse now and then and abandon their carts.

Ground truth (``OUT/ground_truth/``): ``products.csv``, ``customers.csv`` (traits, the
churn date), ``customer_months.csv`` (each buyer-month's hazard and the true probability
of the 3-month churn label), ``product_demand.csv`` (each product-week's expected units)
and ``params.json``.

Determinism and scale: each customer has its own ``random.Random`` seeded from (seed,
customer id), so output is byte-identical for the same arguments whatever the number
of worker processes; customers are generated and written in chunks.
"""
from transforms.simulator.reference import EVENT_MIX_TARGET, PAYMENT_METHODS, PROVINCES
from transforms.simulator.world import Knobs, build_products
from transforms.simulator.writer import (
    GT_CUSTOMER_MONTHS_HEADER,
    GT_CUSTOMERS_HEADER,
    GT_DEMAND_HEADER,
    GT_PRODUCTS_HEADER,
    Summary,
    generate,
)

__all__ = ["EVENT_MIX_TARGET", "GT_CUSTOMER_MONTHS_HEADER", "GT_CUSTOMERS_HEADER",
           "GT_DEMAND_HEADER", "GT_PRODUCTS_HEADER", "Knobs", "PAYMENT_METHODS", "PROVINCES",
           "Summary", "build_products", "generate"]
