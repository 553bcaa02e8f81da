// Generated per customer by webrelease: do not edit in the site.
window.APP_CONFIG = {
  customerId: {{ id|json }},
  apiUrl: {{ apiUrl|json }},
  locale: {{ locale|json }},
  features: {{ features|default([])|json }},
  release: {{ release.name|json }}
};
