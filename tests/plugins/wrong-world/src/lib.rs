//! A valid component that does not implement `etl:transform/plugin`: it
//! exports a string-to-string `transform`, as an older contract might have.

wit_bindgen::generate!({
    inline: "
        package other:thing@1.0.0;
        world plugin {
            export transform: func(input: string) -> string;
        }
    ",
});

struct Other;

impl Guest for Other {
    fn transform(input: String) -> String {
        input
    }
}

export!(Other);
