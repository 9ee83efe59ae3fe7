"""Texts of the public form pages in English, Swedish, Finnish, Danish and Latvian."""

from __future__ import annotations

LANGUAGES: tuple[str, ...] = ("en", "sv", "fi", "da", "lv")
DEFAULT_LANGUAGE = "en"

TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "submit": "Send",
        "choose": "Choose…",
        "required": "This field is required.",
        "invalid_email": "Enter a valid email address.",
        "invalid_phone": "Enter a valid phone number.",
        "invalid_option": "Choose one of the options.",
        "invalid_country": "Enter a two-letter country code.",
        "invalid_language": "Enter a language code.",
        "invalid_number": "Enter a number.",
        "invalid_value": "This value is not valid.",
        "too_long": "This value is too long.",
        "consent_required": "Please tick the box to continue.",
        "consent_changed": "The consent text has changed. Please read it and tick the box again.",
        "fix_errors": "Please correct the marked fields.",
        "failed": "Sending failed. Please try again.",
        "rate_limited": "Too many submissions. Please wait a minute and try again.",
        "not_found_title": "Form not found",
        "not_found_text": "This form does not exist or is no longer open.",
        "required_mark": "required",
    },
    "sv": {
        "submit": "Skicka",
        "choose": "Välj…",
        "required": "Fältet är obligatoriskt.",
        "invalid_email": "Ange en giltig e-postadress.",
        "invalid_phone": "Ange ett giltigt telefonnummer.",
        "invalid_option": "Välj ett av alternativen.",
        "invalid_country": "Ange en landskod med två bokstäver.",
        "invalid_language": "Ange en språkkod.",
        "invalid_number": "Ange ett tal.",
        "invalid_value": "Värdet är inte giltigt.",
        "too_long": "Värdet är för långt.",
        "consent_required": "Kryssa i rutan för att fortsätta.",
        "consent_changed": "Samtyckestexten har ändrats. Läs den och kryssa i rutan igen.",
        "fix_errors": "Rätta de markerade fälten.",
        "failed": "Det gick inte att skicka. Försök igen.",
        "rate_limited": "För många inskickningar. Vänta en minut och försök igen.",
        "not_found_title": "Formuläret hittades inte",
        "not_found_text": "Formuläret finns inte eller är inte längre öppet.",
        "required_mark": "obligatoriskt",
    },
    "fi": {
        "submit": "Lähetä",
        "choose": "Valitse…",
        "required": "Kenttä on pakollinen.",
        "invalid_email": "Anna kelvollinen sähköpostiosoite.",
        "invalid_phone": "Anna kelvollinen puhelinnumero.",
        "invalid_option": "Valitse jokin vaihtoehdoista.",
        "invalid_country": "Anna kaksikirjaiminen maakoodi.",
        "invalid_language": "Anna kielikoodi.",
        "invalid_number": "Anna luku.",
        "invalid_value": "Arvo ei kelpaa.",
        "too_long": "Arvo on liian pitkä.",
        "consent_required": "Rastita ruutu jatkaaksesi.",
        "consent_changed": "Suostumusteksti on muuttunut. Lue se ja rastita ruutu uudelleen.",
        "fix_errors": "Korjaa merkityt kentät.",
        "failed": "Lähetys epäonnistui. Yritä uudelleen.",
        "rate_limited": "Liian monta lähetystä. Odota hetki ja yritä uudelleen.",
        "not_found_title": "Lomaketta ei löytynyt",
        "not_found_text": "Lomaketta ei ole tai se ei ole enää avoinna.",
        "required_mark": "pakollinen",
    },
    "da": {
        "submit": "Send",
        "choose": "Vælg…",
        "required": "Feltet skal udfyldes.",
        "invalid_email": "Indtast en gyldig e-mailadresse.",
        "invalid_phone": "Indtast et gyldigt telefonnummer.",
        "invalid_option": "Vælg en af mulighederne.",
        "invalid_country": "Indtast en landekode på to bogstaver.",
        "invalid_language": "Indtast en sprogkode.",
        "invalid_number": "Indtast et tal.",
        "invalid_value": "Værdien er ikke gyldig.",
        "too_long": "Værdien er for lang.",
        "consent_required": "Sæt kryds i feltet for at fortsætte.",
        "consent_changed": "Samtykketeksten er ændret. Læs den, og sæt kryds i feltet igen.",
        "fix_errors": "Ret de markerede felter.",
        "failed": "Afsendelsen mislykkedes. Prøv igen.",
        "rate_limited": "For mange indsendelser. Vent et minut og prøv igen.",
        "not_found_title": "Formularen blev ikke fundet",
        "not_found_text": "Formularen findes ikke eller er ikke længere åben.",
        "required_mark": "påkrævet",
    },
    "lv": {
        "submit": "Nosūtīt",
        "choose": "Izvēlieties…",
        "required": "Šis lauks ir obligāts.",
        "invalid_email": "Ievadiet derīgu e-pasta adresi.",
        "invalid_phone": "Ievadiet derīgu tālruņa numuru.",
        "invalid_option": "Izvēlieties kādu no iespējām.",
        "invalid_country": "Ievadiet divu burtu valsts kodu.",
        "invalid_language": "Ievadiet valodas kodu.",
        "invalid_number": "Ievadiet skaitli.",
        "invalid_value": "Vērtība nav derīga.",
        "too_long": "Vērtība ir pārāk gara.",
        "consent_required": "Lai turpinātu, atzīmējiet izvēles rūtiņu.",
        "consent_changed": "Piekrišanas teksts ir mainījies. Lūdzu, izlasiet to un atzīmējiet rūtiņu vēlreiz.",
        "fix_errors": "Lūdzu, izlabojiet atzīmētos laukus.",
        "failed": "Neizdevās nosūtīt. Mēģiniet vēlreiz.",
        "rate_limited": "Pārāk daudz iesniegumu. Uzgaidiet minūti un mēģiniet vēlreiz.",
        "not_found_title": "Veidlapa nav atrasta",
        "not_found_text": "Šī veidlapa neeksistē vai vairs nav atvērta.",
        "required_mark": "obligāts",
    },
}


def texts(language: str | None) -> dict[str, str]:
    """The texts of ``language`` (English when unsupported)."""
    return TEXTS.get((language or "").lower(), TEXTS[DEFAULT_LANGUAGE])


def t(language: str | None, key: str) -> str:
    """One text of ``language``."""
    return texts(language).get(key) or TEXTS[DEFAULT_LANGUAGE][key]


def negotiate(accept_language: str | None, fixed: str | None = None) -> str:
    """The page language: the form's own language if set, else the best supported Accept-Language entry."""
    if fixed and fixed in TEXTS:
        return fixed
    candidates: list[tuple[float, int, str]] = []
    for position, part in enumerate((accept_language or "").split(",")):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        lang = tag.strip().lower().replace("_", "-").split("-", 1)[0]
        if lang in TEXTS and quality > 0:
            # Higher quality first; among equals, the order of the header.
            candidates.append((-quality, position, lang))
    return min(candidates)[2] if candidates else DEFAULT_LANGUAGE
