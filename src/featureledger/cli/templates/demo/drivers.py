"""Driver features of the demo ride-hailing project."""

from featureledger import Entity, FeatureSet, FeatureView, Field, FileSource

driver = Entity(
    name="driver",
    join_keys={"driver_id": "int64"},
    description="A driver on the platform",
)

driver_stats = FeatureView(
    name="driver_stats",
    entities=[driver],
    fields=[
        Field(name="conv_rate", dtype="float32", min=0, max=1,
              description="Share of ride offers the driver accepted"),
        Field(name="acc_rate", dtype="float32", min=0, max=1,
              description="Share of accepted rides completed"),
        Field(name="avg_daily_trips", dtype="int64", min=0, unit="trips/day", nullable=False,
              description="Trips per day over the last week"),
        Field(name="rating", dtype="float64", min=1, max=5,
              description="Mean passenger rating"),
        Field(name="vehicle_type", dtype="string",
              allowed_values=["bike", "sedan", "suv", "van"]),
    ],
    source=FileSource(path="data/driver_stats.parquet"),
    timestamp_field="event_timestamp",
    ttl="7d",
    owner="rides-team@example.com",
    description="Hourly driver performance statistics",
    tags={"team": "rides"},
    checks={"completion_needs_acceptance": "acc_rate <= 1.0 OR conv_rate > 0"},
    compatibility="backward",
)

ride_model_features = FeatureSet(
    name="ride_model_features",
    features=[
        "driver_stats:conv_rate",
        "driver_stats:acc_rate",
        "driver_stats:avg_daily_trips",
        "customer_profile:avg_fare",
        "customer_profile:lifetime_trips",
    ],
    description="Inputs of the ride-completion model",
)
