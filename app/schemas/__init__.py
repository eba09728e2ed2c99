"""The API's request and response models and the OpenAPI document built from them."""
