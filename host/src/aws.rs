//! One settings type for every AWS client weir makes (DynamoDB checkpoints,
//! Lambda notices) and the shared SDK configuration built from it.

/// Connection settings of an AWS client (region, endpoint, static keys;
/// anything unset comes from the usual AWS chain).
#[derive(Clone, Debug, Default)]
pub struct AwsSettings {
    /// region.
    pub region: Option<String>,
    /// endpoint (moto, LocalStack, VPC endpoints).
    pub endpoint: Option<String>,
    /// access key.
    pub access_key_id: Option<String>,
    /// secret key.
    pub secret_access_key: Option<String>,
}

/// Load the shared AWS configuration (TLS through rustls with ring).
pub async fn aws_config(settings: &AwsSettings) -> aws_config::SdkConfig {
    use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest()).http_client(http);
    if let Some(region) = &settings.region {
        loader = loader.region(aws_config::Region::new(region.clone()));
    }
    if let Some(endpoint) = &settings.endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    if let (Some(key), Some(secret)) = (&settings.access_key_id, &settings.secret_access_key) {
        loader = loader.credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            key,
            secret,
            None,
            None,
            "weir pipeline file",
        ));
    }
    loader.load().await
}
