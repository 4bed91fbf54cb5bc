//! Every example runs and checks its own answer.

#[path = "../examples/auction_hot_items.rs"]
mod auction_hot_items;
#[path = "../examples/clickstream_sessions.rs"]
mod clickstream_sessions;
#[path = "../examples/embedded_service.rs"]
mod embedded_service;
#[path = "../examples/sensor_anomalies.rs"]
mod sensor_anomalies;

#[test]
fn clickstream_sessions_example() {
    clickstream_sessions::run().unwrap();
}

#[test]
fn auction_hot_items_example() {
    auction_hot_items::run().unwrap();
}

#[test]
fn embedded_service_example() {
    embedded_service::run().unwrap();
}

#[test]
fn sensor_anomalies_example() {
    sensor_anomalies::run().unwrap();
}
