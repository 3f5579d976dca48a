package push

// typeURLPrefix is what a type URL is made of besides the message's full name.
const typeURLPrefix = "type.googleapis.com/"
